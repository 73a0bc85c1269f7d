//! Places for long-lived streams: a shared cap per kind of stream, a cap
//! per caller, and for relying parties following under a configured name,
//! a cap per name outside the shared one. So one workload cannot open
//! every revocation stream and leave the relying parties that prove
//! removal without one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The places for one kind of stream.
#[derive(Debug)]
pub(super) struct StreamSlots {
    /// What the streams are, for messages.
    kind: &'static str,
    /// The shared places.
    shared: Arc<Semaphore>,
    /// Each holder's (caller's or name's) count.
    held: Arc<Mutex<HashMap<String, usize>>>,
    /// Most streams one holder may have.
    per_holder: usize,
}

/// One stream's place; given back when dropped.
#[derive(Debug)]
pub(super) struct StreamSlot {
    _shared: Option<OwnedSemaphorePermit>,
    held: Arc<Mutex<HashMap<String, usize>>>,
    holder: String,
}

// === impl StreamSlots ===

impl StreamSlots {
    pub(super) fn new(kind: &'static str, shared: usize, per_holder: usize) -> Self {
        Self {
            kind,
            shared: Arc::new(Semaphore::new(shared)),
            held: Arc::default(),
            per_holder,
        }
    }

    /// A place for a stream of `caller` (a SPIFFE ID), out of the shared
    /// ones.
    pub(super) fn for_caller(&self, caller: &str) -> Result<StreamSlot, Status> {
        let shared = self.shared.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!("too many {} open; retry later", self.kind))
        })?;
        self.hold(format!("caller {caller}"), Some(shared))
            .map_err(|limit| {
                Status::resource_exhausted(format!(
                    "{caller} already has {limit} {} open, the most one caller may (limits.max_streams_per_caller)",
                    self.kind
                ))
            })
    }

    /// A place for a stream of the configured relying party `name`, kept
    /// apart from the shared ones.
    pub(super) fn for_relying_party(&self, name: &str) -> Result<StreamSlot, Status> {
        self.hold(format!("party {name}"), None).map_err(|limit| {
            Status::resource_exhausted(format!(
                "relying party {name:?} already has {limit} {} open (limits.max_streams_per_caller)",
                self.kind
            ))
        })
    }

    fn hold(
        &self,
        holder: String,
        shared: Option<OwnedSemaphorePermit>,
    ) -> Result<StreamSlot, usize> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(holder.clone()).or_insert(0);
        if *count >= self.per_holder {
            return Err(self.per_holder);
        }
        *count += 1;
        Ok(StreamSlot {
            _shared: shared,
            held: self.held.clone(),
            holder,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_and_names_have_their_own_share() {
        let slots = StreamSlots::new("revocation streams", 3, 2);
        let a1 = slots.for_caller("a").unwrap();
        let _a2 = slots.for_caller("a").unwrap();
        let error = slots.for_caller("a").unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(
            error.message().contains("max_streams_per_caller"),
            "{error:?}"
        );
        let _b = slots.for_caller("b").unwrap();
        // The shared places are gone, but a named relying party has its own.
        let error = slots.for_caller("c").unwrap_err();
        assert!(
            error.message().contains("too many revocation streams"),
            "{error:?}"
        );
        let _party = slots.for_relying_party("ledger").unwrap();
        let _party2 = slots.for_relying_party("ledger").unwrap();
        assert!(slots.for_relying_party("ledger").is_err());
        // A place given back is free again.
        drop(a1);
        let _c = slots.for_caller("c").unwrap();
    }
}
