//! Typed identifiers. The engine never interprets them; the storage layer owns
//! their meaning (database keys), so they are plain integers behind newtypes.

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}#{}", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// A zone: a polygon, multipolygon or circle with a kind and a buffer.
    ZoneId(u64)
);
id_type!(
    /// A person under supervision.
    SubjectId(u64)
);
id_type!(
    /// One rule of one subject (an assignment of a zone, a curfew, a proximity order).
    RuleId(u64)
);
id_type!(
    /// A tracking device that is not a subject's own bracelet, e.g. the device a
    /// protected victim carries.
    DeviceId(u64)
);
id_type!(
    /// A restriction category such as "schools": global zones carry one, subjects
    /// opt in through a [`RuleKind::Category`](crate::RuleKind::Category) rule.
    CategoryId(u32)
);

/// Dense handle of a registered subject: the O(1) key for [`Engine::evaluate`](crate::Engine::evaluate).
///
/// Handles stay valid until the subject is removed; a removed subject's handle is
/// never reused, so a stale handle yields [`EngineError::UnknownSubject`](crate::EngineError::UnknownSubject)
/// rather than another subject's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubjectHandle(pub(crate) u32, pub(crate) u32);
