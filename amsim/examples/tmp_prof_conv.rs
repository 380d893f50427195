use amsim::bench::named_conv_shape;
use amsim::conv::*;
use amsim::Multiplier;
use std::time::Instant;
fn ex(a: f32, b: f32, _bits: u32) -> f32 {
    a * b
}
fn main() {
    let name = std::env::args().nth(1).unwrap_or("resnet20-layer1".into());
    let s = named_conv_shape(&name, 32).unwrap();
    let x = vec![0.5f32; s.x_len()];
    let w = vec![0.25f32; s.w_len()];
    let mut y = vec![0.0f32; s.y_len()];
    let mut dx = vec![0.0f32; s.x_len()];
    let mut dw = vec![0.0f32; s.w_len()];
    let l = Multiplier::Lut(std::sync::Arc::new(amsim::Lut::build("ex", ex, 7).unwrap()));
    for m in [Multiplier::Fp32, l] {
        for _ in 0..3 {
            let t = Instant::now();
            conv2d_forward(&m, &s, &x, &w, &mut y).unwrap();
            let a = t.elapsed();
            let t = Instant::now();
            conv2d_grad_input(&m, &s, &y, &w, &mut dx).unwrap();
            let b = t.elapsed();
            let t = Instant::now();
            conv2d_grad_weight(&m, &s, &x, &y, &mut dw).unwrap();
            eprintln!("{m} fwd {a:?} dx {b:?} dw {:?}", t.elapsed());
        }
    }
}
