//! The engine and the device registry: the state ingest judges with and the
//! reference loader keeps current.
//!
//! **Architecture Invariant:** only two crates lock it: `reference` (to apply
//! a change) and `ingest` (to check devices, judge fixes, rebuild after a
//! restart, and name the devices of transitions). The alert service never
//! does; what it needs travels on the [`bus`].

use bus::{Fleet, Watched, WatchedPhone};
use geofence::{DeviceId, Engine, SubjectId};
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What a device is (`devices.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A subject's ankle bracelet.
    Bracelet,
    /// A protected person's phone (OwnTracks): the other party of proximity rules.
    VictimPhone,
}

impl DeviceKind {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Bracelet => "bracelet",
            DeviceKind::VictimPhone => "victim_phone",
        }
    }

    /// The kind whose label is `name`.
    pub fn from_name(name: &str) -> Option<DeviceKind> {
        [DeviceKind::Bracelet, DeviceKind::VictimPhone]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A known device, as the pipeline needs it.
#[derive(Clone, Debug)]
pub struct DeviceRef {
    /// Its protocol id.
    pub name: Arc<str>,
    /// The engine's id for it (dense, assigned by this process).
    pub engine: DeviceId,
    /// Bracelet or victim phone.
    pub kind: DeviceKind,
    /// Retired devices' messages are refused (`device_retired`).
    pub retired: bool,
    /// The subject it is assigned to now (bracelets).
    pub subject: Option<SubjectId>,
    /// A victim phone registered in `victims` (its fixes feed proximity rules).
    pub protects: bool,
    /// The subjects a victim phone is protected from.
    pub protected: Vec<u64>,
    /// How often it reports (`devices.report_interval_s`); silence detection
    /// allows this plus a buffer.
    pub report_interval_s: u32,
    /// The payload format it is registered to send (`devices.format`): a
    /// message in another is refused (`format_mismatch`).
    pub format: protocol::Format,
}

/// Text device ids to their registry entries.
#[derive(Debug, Default)]
pub struct Registry {
    pub(crate) devices: FxHashMap<String, DeviceRef>,
    ids: FxHashMap<String, DeviceId>,
    /// `names[id - 1]` is the device whose engine id is `id`.
    names: Vec<Arc<str>>,
}

impl Registry {
    /// A device by its protocol id.
    pub fn get(&self, device: &str) -> Option<&DeviceRef> {
        self.devices.get(device)
    }

    /// Known devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No device known.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The protocol id of an engine device id.
    pub fn name_of(&self, id: DeviceId) -> Option<&str> {
        let i = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.names.get(i).map(|n| &**n)
    }

    /// The engine id of `device`, assigned on first use and kept for the life
    /// of the process (proximity rules refer to devices by it).
    pub(crate) fn engine_id(&mut self, device: &str) -> (DeviceId, Arc<str>) {
        if let Some(id) = self.ids.get(device) {
            let name = usize::try_from(id.0 - 1)
                .ok()
                .and_then(|i| self.names.get(i).cloned())
                .unwrap_or_else(|| Arc::from(device));
            return (*id, name);
        }
        let name: Arc<str> = Arc::from(device);
        self.names.push(name.clone());
        let id = DeviceId(self.names.len() as u64);
        self.ids.insert(device.to_owned(), id);
        (id, name)
    }

    /// The bracelets to watch for silence (assigned, not retired, with an
    /// engine id the alert service can index), and the protected persons'
    /// phones.
    pub fn fleet(&self) -> Fleet {
        let mut bracelets: Vec<Watched> = self
            .devices
            .values()
            .filter(|d| d.kind == DeviceKind::Bracelet && !d.retired)
            .filter_map(|d| {
                Some(Watched {
                    device: u32::try_from(d.engine.0).ok()?,
                    name: d.name.clone(),
                    subject: d.subject?.0,
                    report_interval_s: d.report_interval_s,
                })
            })
            .collect();
        bracelets.sort_by_key(|w| w.device);
        let mut phones: Vec<WatchedPhone> = self
            .devices
            .values()
            .filter(|d| d.kind == DeviceKind::VictimPhone && !d.retired && !d.protected.is_empty())
            .filter_map(|d| {
                Some(WatchedPhone {
                    device: u32::try_from(d.engine.0).ok()?,
                    name: d.name.clone(),
                    protects: d.protected.clone(),
                    report_interval_s: d.report_interval_s,
                })
            })
            .collect();
        phones.sort_by_key(|w| w.device);
        Fleet { bracelets, phones }
    }
}

/// The engine and the registry: the state every worker consults.
#[derive(Default)]
pub struct Core {
    /// Zones, subjects and their rule state.
    pub engine: Engine,
    /// Devices.
    pub registry: Registry,
    pub(crate) zones: FxHashSet<i64>,
    pub(crate) subjects: FxHashSet<i64>,
    /// How far back earlier zone versions are kept in the engine: as far
    /// as a fix that may still arrive can date (ingest's `max_age`).
    pub(crate) history: Duration,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("zones", &self.zones.len())
            .field("subjects", &self.subjects.len())
            .field("devices", &self.registry.len())
            .finish()
    }
}

impl Core {
    /// Zones, subjects and devices loaded.
    pub fn counts(&self) -> Loaded {
        Loaded {
            zones: self.zones.len(),
            subjects: self.subjects.len(),
            devices: self.registry.len(),
        }
    }
}

/// How much reference data the engine holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Zones.
    pub zones: usize,
    /// Subjects.
    pub subjects: usize,
    /// Devices.
    pub devices: usize,
}

/// The [`Core`], shared between the reference loader and ingest's workers.
#[derive(Clone, Debug, Default)]
pub struct SharedCore(Arc<Mutex<Core>>);

impl SharedCore {
    /// An empty core that keeps the zone versions of the last `history`
    /// (see [`Engine::upsert_zone_versions`]).
    pub fn new(history: Duration) -> SharedCore {
        SharedCore(Arc::new(Mutex::new(Core {
            history,
            ..Core::default()
        })))
    }

    /// Locks it. A panic while it was held (a bug) does not poison it for
    /// the rest of the service: the state is a cache of the database, and
    /// How much reference data the engine holds (locks it for a moment;
    /// for the metrics, read at scrape time).
    pub fn counts(&self) -> Loaded {
        self.lock().counts()
    }

    /// the dead worker already stops the service.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
