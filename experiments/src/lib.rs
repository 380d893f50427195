//! Run specs, sweeps, CSV logs, plots and reports.
