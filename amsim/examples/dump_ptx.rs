//! Print the PTX of the CUDA kernels for an architecture (default
//! compute_90): `cargo run -p amsim --example dump_ptx -- compute_80`.
fn main() {
    let arch = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "compute_90".into());
    match amsim::cuda::compile_kernels(&arch) {
        Ok(ptx) => print!("{}", ptx.to_src()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
