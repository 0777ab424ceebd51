//! A simulated QuickBooks Online.
