//! Characterization of a multiplier model over mantissa pairs.
