//! diemcau-signal
