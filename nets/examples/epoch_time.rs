// temporary timing harness (not committed)
use amsim::{Lut, Multiplier, MultiplierPlan};
use nets::data::{load_mnist_like, Split};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::Network;
use std::sync::Arc;
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let xa = ((a - 1.0) * scale).floor() / scale;
    let xb = ((b - 1.0) * scale).floor() / scale;
    let s = xa + xb;
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[1].parse().unwrap();
    let mult = if args[2] == "fp32" {
        Multiplier::Fp32
    } else {
        Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, 7).unwrap()))
    };
    let net_name = &args[3];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/mnist");
    let train = load_mnist_like(&dir, Split::Train, Some(n)).unwrap();
    let test = load_mnist_like(&dir, Split::Test, Some(2000)).unwrap();
    let net =
        Network::by_name(net_name, &[1, 28, 28], 10, MultiplierPlan::uniform(mult), 1).unwrap();
    let mut t = Trainer::new(
        net,
        Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap(),
        LrSchedule::constant(0.01),
        1,
    )
    .unwrap();
    for _ in 0..args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1) {
        let s = t.train_epoch(&train, 64, &mut |_| {}).unwrap();
        let e = t.evaluate(&test, 256).unwrap();
        println!("{:?}\n{:?}", s, e);
    }
}
