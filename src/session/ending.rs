//! What follows the ending of sessions. The reasons themselves ([`EndReason`]) are record
//! vocabulary and live with the records in `store`.

pub use crate::store::EndReason;
