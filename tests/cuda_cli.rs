//! `--device cuda` on a machine without a usable GPU (bench gemm, conv and
//! train, training a LeNet-5 and the Transformer): a one-line error naming what
//! is missing, no panic, nothing written. On a machine with a GPU the
//! check prints why it is skipped (scripts/gpu-check.sh covers that case).

use std::process::Command;

#[test]
fn device_cuda_without_a_gpu_is_a_clear_error() {
    if let Ok(e) = amsim::cuda::CudaEngine::global() {
        eprintln!(
            "SKIPPED device_cuda_without_a_gpu_is_a_clear_error: this machine has a GPU ({})",
            e.device_name()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    // A valid text, so that only the device can make the transformer run fail.
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "to be or not to be, that is the question.\n".repeat(50),
    )
    .unwrap();
    let dataset = format!("text:{}", text.display());
    for args in [
        vec![
            "bench", "gemm", "--device", "cuda", "--m", "8", "--n", "8", "--k", "8",
        ],
        vec!["bench", "conv", "--device", "cuda"],
        vec![
            "bench", "train", "--device", "cuda", "--net", "lenet5", "--images", "128",
        ],
        vec![
            "bench",
            "train",
            "--device",
            "cuda",
            "--net",
            "transformer",
            "--dataset",
            &dataset,
            "--steps",
            "1",
        ],
        vec![
            "train",
            "--device",
            "cuda",
            "--net",
            "lenet5",
            "--epochs",
            "1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        vec![
            "train",
            "--device",
            "cuda",
            "--net",
            "transformer",
            "--dataset",
            &dataset,
            "--layers",
            "1",
            "--width",
            "16",
            "--heads",
            "2",
            "--context",
            "16",
            "--steps",
            "2",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_approxtrain"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded without a GPU");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        let last = err.lines().rfind(|l| l.starts_with("error")).unwrap_or("");
        assert!(
            last.contains("--device cuda")
                && (last.contains("driver") || last.contains("GPU") || last.contains("NVRTC")),
            "{args:?}: expected an error naming what is missing, got: {err}"
        );
        assert!(!out_dir.exists(), "{args:?} wrote a run directory");
    }
}
