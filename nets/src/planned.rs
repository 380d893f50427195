//! What runs, evaluation and sensitivity need of a model whose layers take
//! multiplier plans, whichever task it serves: the classifiers'
//! [`crate::Network`] and the [`crate::transformer::Transformer`] both
//! implement [`PlannedModel`], next to their types.

use amsim::MultiplierPlan;

use crate::layers::MacCounts;
use crate::Result;

/// A model whose layers (and blocks) take multiplier plans by name.
pub trait PlannedModel {
    /// Every name a plan can be given to, in order (a classifier's layers
    /// and ResNet blocks with their inner convolutions; a Transformer's
    /// blocks, their attention and MLP layers, and the head).
    fn plan_names(&self) -> Vec<String>;

    /// Give the layer (or block) `name` the plan `plan`; an error listing
    /// the valid names when there is no such name.
    fn set_plan_by_name(&mut self, name: &str, plan: MultiplierPlan) -> Result<()>;

    /// Multiply-accumulates per role of one training example: an image, or
    /// a window of the Transformer's context (an evaluated example costs
    /// `forward` only).
    fn macs_per_example(&self) -> MacCounts;

    /// Set per-layer plans in name order, so that a block's plan comes
    /// before those of its inner layers (`s1b1` < `s1b1.conv1`, `block0` <
    /// `block0.attn`): the more specific name wins.
    fn set_plans_by_name(&mut self, mut plans: Vec<(String, MultiplierPlan)>) -> Result<()> {
        plans.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, plan) in plans {
            self.set_plan_by_name(&name, plan)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use amsim::{Multiplier, MultiplierPlan};

    use super::PlannedModel;
    use crate::transformer::{Positions, Transformer, TransformerConfig};
    use crate::Network;

    fn plan(m: Multiplier) -> MultiplierPlan {
        MultiplierPlan::uniform(m)
    }

    /// A block's plan never overrides the plan of one of its parts, in
    /// whatever order the plans are given; the other parts keep the
    /// block's.
    #[test]
    fn the_more_specific_name_wins_in_any_order() {
        let config = TransformerConfig {
            vocab: 7,
            context: 4,
            layers: 2,
            width: 8,
            heads: 2,
            positions: Positions::Learned,
            tied_head: true,
        };
        for reversed in [false, true] {
            let mut model = Transformer::new(config, plan(Multiplier::Fp32), 1).unwrap();
            let mut plans = vec![
                ("block1".to_string(), plan(Multiplier::Bf16)),
                ("block1.mlp.fc2".to_string(), plan(Multiplier::Fp32)),
            ];
            if reversed {
                plans.reverse();
            }
            model.set_plans_by_name(plans).unwrap();
            let got = |name: &str| model.plan_by_name(name).unwrap().label();
            assert_eq!(got("block1.mlp.fc2"), "fp32", "reversed {reversed}");
            assert_eq!(got("block1.mlp.fc1"), "bf16", "reversed {reversed}");
            assert_eq!(got("block0.mlp.fc1"), "fp32", "reversed {reversed}");
        }
    }

    /// A name the model does not have is an error that lists the valid
    /// ones, for either model.
    #[test]
    fn unknown_names_are_errors_listing_the_valid_names() {
        let mut lenet = Network::lenet5(plan(Multiplier::Fp32), 1);
        let e = lenet
            .set_plans_by_name(vec![("conv9".into(), plan(Multiplier::Bf16))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("conv9") && e.contains("conv1"), "{e}");
        assert_eq!(lenet.macs_per_example(), lenet.macs_per_image());
    }
}
