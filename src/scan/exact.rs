//! The hook through which exact data match (EDM) reaches the engine.
//!
//! A rule with an `edm:` key counts a value only when the company's own customer table
//! holds it. The table lives in an index the policy layer loads
//! ([`crate::policy::edm::EdmIndex`]); the engine sees it only through [`ExactIndex`], so
//! that `scan` stays free of files and keys. Lookups take the rule's *normalised* value
//! (the same bytes the distinct count hashes) and answer with the records holding it.

use std::fmt::Debug;

/// Most records one value is looked up in (a shared phone number, say): a value held by
/// more records is matched against the first ones only.
pub const MAX_RECORDS_PER_VALUE: usize = 16;

/// An exact-data-match index as the engine uses it.
pub trait ExactIndex: Send + Sync + Debug {
    /// The index of a column, by the name the rule gives (`email`), if the index has it.
    fn field(&self, name: &str) -> Option<u16>;

    /// Appends to `out` the ids of the records (at most [`MAX_RECORDS_PER_VALUE`]) whose
    /// column `field` holds `normalized`; appends nothing when no record does.
    fn records(&self, field: u16, normalized: &[u8], out: &mut Vec<u32>);
}
