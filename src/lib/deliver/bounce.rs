//! DSNs
