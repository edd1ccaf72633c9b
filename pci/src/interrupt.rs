//! The MSI/MSI-X → VMM interface: the [`MsiRoutes`] trait the vmm implements, and the one
//! place that orders route changes.
//!
//! A vector is *armed* when the guest lets it fire (MSI/MSI-X enabled, not function-masked,
//! not vector-masked) and its message is a valid x86 MSI (address 0xFEEx_xxxx). Only armed
//! vectors have a route and an irqfd. After every guest change, the vector tracker
//! compares the wanted state with the armed one and calls, in this order and only when there
//! is something to do:
//! 1. [`MsiRoutes::disable`] for every vector that stops firing (drop its irqfd),
//! 2. [`MsiRoutes::set_routes`] with the routes of *all* armed vectors (one routing commit),
//! 3. [`MsiRoutes::enable`] for every vector that starts firing (add its irqfd),
//! 4. [`MsiRoutes::trigger`] for newly armed vectors whose pending bit was set.

use std::ops::Range;

use log::warn;

/// An MSI message: what the device writes, where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Message address (x86: 0xFEEx_xxxx, destination APIC id in bits 19:12).
    pub address: u64,
    /// Message data (vector, delivery mode, trigger).
    pub data: u32,
}

impl MsiMessage {
    /// The address is in the x86 interrupt window 0xFEE0_0000..=0xFEEF_FFFF.
    pub fn is_valid(&self) -> bool {
        self.address >> 20 == 0xfee
    }
}

/// The route of one armed vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorRoute {
    /// Vector index within the device's MSI or MSI-X vectors.
    pub vector: u16,
    /// Its message.
    pub message: MsiMessage,
}

/// A failure of the vmm's side of a route change, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct RouteError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl RouteError {
    /// Wraps `source` with `context` (e.g. "KVM_SET_GSI_ROUTING for 00:06.0 MSI-X").
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RouteError {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// What the vmm does for one device's MSI or MSI-X vectors (one implementor per device and
/// interrupt type; vectors are indices within it). The calls come in the order documented
/// in this module; each list is non-empty.
pub trait MsiRoutes {
    /// Stop delivering `vectors`: unregister their irqfds (the routes go at the next
    /// [`Self::set_routes`]).
    fn disable(&mut self, vectors: &[u16]) -> Result<(), RouteError>;
    /// The complete set of this device's armed vectors and their messages (may be empty);
    /// replaces the previous set in one routing-table commit.
    fn set_routes(&mut self, routes: &[VectorRoute]) -> Result<(), RouteError>;
    /// Start delivering `vectors`: register their irqfds (their routes are set).
    fn enable(&mut self, vectors: &[u16]) -> Result<(), RouteError>;
    /// Deliver `vector` once now: it was pending while masked and is now armed.
    fn trigger(&mut self, vector: u16) -> Result<(), RouteError>;
    /// Whose vectors these are, for messages about the guest's mistakes (e.g.
    /// "0000:00:02.0 MSI-X"); empty by default.
    fn owner(&self) -> String {
        String::new()
    }
}

/// The armed state the vmm has been told about, per vector.
#[derive(Clone, Debug)]
pub(crate) struct VectorTracker {
    armed: Vec<bool>,
    routed: Vec<Option<MsiMessage>>,
}

impl VectorTracker {
    pub(crate) fn new(vectors: u16) -> Self {
        VectorTracker {
            armed: vec![false; usize::from(vectors)],
            routed: vec![None; usize::from(vectors)],
        }
    }

    pub(crate) fn is_armed(&self, vector: u16) -> bool {
        self.armed
            .get(usize::from(vector))
            .copied()
            .unwrap_or(false)
    }

    /// Brings the vectors in `candidates` to `wanted(v)` (Some = armed with that message),
    /// in the documented order. Returns the vectors newly armed. On error, the steps done
    /// so far are recorded, so the next sync retries only the rest.
    pub(crate) fn sync(
        &mut self,
        candidates: Range<u16>,
        wanted: impl Fn(u16) -> Option<MsiMessage>,
        routes: &mut dyn MsiRoutes,
    ) -> Result<Vec<u16>, RouteError> {
        let end = candidates.end.min(self.armed.len() as u16); // len <= 2048
        let wanted: Vec<(u16, Option<MsiMessage>)> =
            (candidates.start..end).map(|v| (v, wanted(v))).collect();

        let to_disable: Vec<u16> = wanted
            .iter()
            .filter(|(v, w)| w.is_none() && self.armed[usize::from(*v)])
            .map(|(v, _)| *v)
            .collect();
        if !to_disable.is_empty() {
            routes.disable(&to_disable)?;
            for v in &to_disable {
                self.armed[usize::from(*v)] = false;
            }
        }

        if wanted
            .iter()
            .any(|(v, w)| self.routed[usize::from(*v)] != *w)
        {
            let mut routed = self.routed.clone();
            for (v, w) in &wanted {
                routed[usize::from(*v)] = *w;
            }
            let list: Vec<VectorRoute> = routed
                .iter()
                .enumerate()
                .filter_map(|(v, m)| {
                    m.map(|message| VectorRoute {
                        vector: v as u16, // v < 2048
                        message,
                    })
                })
                .collect();
            routes.set_routes(&list)?;
            self.routed = routed;
        }

        let to_enable: Vec<u16> = wanted
            .iter()
            .filter(|(v, w)| w.is_some() && !self.armed[usize::from(*v)])
            .map(|(v, _)| *v)
            .collect();
        if !to_enable.is_empty() {
            routes.enable(&to_enable)?;
            for v in &to_enable {
                self.armed[usize::from(*v)] = true;
            }
        }
        Ok(to_enable)
    }
}

/// The message if it may be routed; logs the guest's mistake otherwise (the vmm's logger
/// rate-limits it: a guest can repeat it at will). `who` names the device and kind.
pub(crate) fn checked_message(who: &str, vector: u16, message: MsiMessage) -> Option<MsiMessage> {
    if message.is_valid() {
        Some(message)
    } else {
        warn!(
            "{who} vector {vector}: address {:#x} is not an x86 MSI address \
             (0xfee00000..=0xfeefffff); not routed",
            message.address
        );
        None
    }
}

/// `routes`' owner, or `kind` when it has none.
pub(crate) fn owner_or(routes: &dyn MsiRoutes, kind: &str) -> String {
    let owner = routes.owner();
    if owner.is_empty() {
        kind.to_string()
    } else {
        owner
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording [`MsiRoutes`] for tests.

    use super::*;

    /// One call the fake received.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum RouteCall {
        Disable(Vec<u16>),
        SetRoutes(Vec<VectorRoute>),
        Enable(Vec<u16>),
        Trigger(u16),
    }

    /// Records calls; fails the step named in `fail` (once).
    #[derive(Default, Debug)]
    pub(crate) struct RecordingRoutes {
        pub(crate) calls: Vec<RouteCall>,
        pub(crate) fail: Option<&'static str>,
    }

    impl RecordingRoutes {
        pub(crate) fn take(&mut self) -> Vec<RouteCall> {
            std::mem::take(&mut self.calls)
        }

        fn check(&mut self, step: &'static str) -> Result<(), RouteError> {
            if self.fail == Some(step) {
                self.fail = None;
                return Err(RouteError::new(step, "injected failure"));
            }
            Ok(())
        }
    }

    impl MsiRoutes for RecordingRoutes {
        fn disable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
            self.check("disable")?;
            self.calls.push(RouteCall::Disable(vectors.to_vec()));
            Ok(())
        }
        fn set_routes(&mut self, routes: &[VectorRoute]) -> Result<(), RouteError> {
            self.check("set_routes")?;
            self.calls.push(RouteCall::SetRoutes(routes.to_vec()));
            Ok(())
        }
        fn enable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
            self.check("enable")?;
            self.calls.push(RouteCall::Enable(vectors.to_vec()));
            Ok(())
        }
        fn trigger(&mut self, vector: u16) -> Result<(), RouteError> {
            self.check("trigger")?;
            self.calls.push(RouteCall::Trigger(vector));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{RecordingRoutes, RouteCall};
    use super::*;

    fn msg(n: u32) -> MsiMessage {
        MsiMessage {
            address: 0xfee0_0000,
            data: n,
        }
    }

    #[test]
    fn valid_addresses() {
        assert!(msg(0).is_valid());
        assert!(MsiMessage {
            address: 0xfeef_f00c,
            data: 0
        }
        .is_valid());
        assert!(!MsiMessage {
            address: 0xfed0_0000,
            data: 0
        }
        .is_valid());
        assert!(!MsiMessage {
            address: 0x1_fee0_0000,
            data: 0
        }
        .is_valid());
        assert!(!MsiMessage::default().is_valid());
    }

    #[test]
    fn sync_orders_disable_routes_enable() {
        let mut t = VectorTracker::new(4);
        let mut r = RecordingRoutes::default();
        let armed = t
            .sync(0..4, |v| (v < 2).then(|| msg(v.into())), &mut r)
            .unwrap();
        assert_eq!(armed, vec![0, 1]);
        let routes01 = vec![
            VectorRoute {
                vector: 0,
                message: msg(0),
            },
            VectorRoute {
                vector: 1,
                message: msg(1),
            },
        ];
        assert_eq!(
            r.take(),
            vec![
                RouteCall::SetRoutes(routes01),
                RouteCall::Enable(vec![0, 1])
            ]
        );

        // Vector 0 masked, vector 3 unmasked: disable first, one commit, enable last.
        let armed = t
            .sync(0..4, |v| (v == 1 || v == 3).then(|| msg(v.into())), &mut r)
            .unwrap();
        assert_eq!(armed, vec![3]);
        assert_eq!(
            r.take(),
            vec![
                RouteCall::Disable(vec![0]),
                RouteCall::SetRoutes(vec![
                    VectorRoute {
                        vector: 1,
                        message: msg(1)
                    },
                    VectorRoute {
                        vector: 3,
                        message: msg(3)
                    },
                ]),
                RouteCall::Enable(vec![3]),
            ]
        );

        // Nothing changed: no calls at all.
        t.sync(0..4, |v| (v == 1 || v == 3).then(|| msg(v.into())), &mut r)
            .unwrap();
        assert!(r.calls.is_empty());

        // Only a message change of an armed vector: just the commit.
        t.sync(1..2, |_| Some(msg(7)), &mut r).unwrap();
        assert_eq!(
            r.take(),
            vec![RouteCall::SetRoutes(vec![
                VectorRoute {
                    vector: 1,
                    message: msg(7)
                },
                VectorRoute {
                    vector: 3,
                    message: msg(3)
                },
            ])]
        );
    }

    #[test]
    fn failed_step_is_retried_next_sync() {
        let mut t = VectorTracker::new(2);
        let mut r = RecordingRoutes {
            fail: Some("enable"),
            ..Default::default()
        };
        assert!(t.sync(0..2, |v| Some(msg(v.into())), &mut r).is_err());
        assert!(!t.is_armed(0));
        // Routes were committed; the retry only enables.
        r.take();
        t.sync(0..2, |v| Some(msg(v.into())), &mut r).unwrap();
        assert_eq!(r.take(), vec![RouteCall::Enable(vec![0, 1])]);
        assert!(t.is_armed(0) && t.is_armed(1));
    }

    #[test]
    fn messages_name_the_owner_when_there_is_one() {
        struct Named(RecordingRoutes);
        impl MsiRoutes for Named {
            fn disable(&mut self, v: &[u16]) -> Result<(), RouteError> {
                self.0.disable(v)
            }
            fn set_routes(&mut self, r: &[VectorRoute]) -> Result<(), RouteError> {
                self.0.set_routes(r)
            }
            fn enable(&mut self, v: &[u16]) -> Result<(), RouteError> {
                self.0.enable(v)
            }
            fn trigger(&mut self, v: u16) -> Result<(), RouteError> {
                self.0.trigger(v)
            }
            fn owner(&self) -> String {
                "0000:00:02.0 MSI-X".into()
            }
        }
        assert_eq!(owner_or(&RecordingRoutes::default(), "MSI-X"), "MSI-X");
        assert_eq!(
            owner_or(&Named(RecordingRoutes::default()), "MSI-X"),
            "0000:00:02.0 MSI-X"
        );
        // A message outside 0xfee00000..=0xfeefffff is never routed.
        let bad = MsiMessage {
            address: 0x1234_0000,
            data: 0x31,
        };
        assert_eq!(checked_message("0000:00:02.0 MSI-X", 0, bad), None);
        assert_eq!(checked_message("x", 0, msg(1)), Some(msg(1)));
    }

    #[test]
    fn out_of_range_candidates_are_clipped() {
        let mut t = VectorTracker::new(2);
        let mut r = RecordingRoutes::default();
        let armed = t.sync(0..100, |v| Some(msg(v.into())), &mut r).unwrap();
        assert_eq!(armed, vec![0, 1]);
        assert!(!t.is_armed(5));
    }
}
