//! The process-wide metrics `emtrack run` adds to its services' own: build
//! information, the process (`process_*`), the database pool, the engine's
//! size and the node's role (active or standby).
//!
//! The pool, the engine and the role are read at scrape time by collectors,
//! so they are never stale and nothing polls them.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use reference::SharedCore;
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const REGISTERED: &str = "static metric, registered once";

/// Registers everything this module exports, for the active node.
pub fn register_active(r: &Registry, pool: &PgPool, core: &SharedCore) {
    register_process(r);
    register_role(r, Arc::new(AtomicBool::new(true)));
    register_pool(r, pool.clone());
    register_engine(r, core.clone());
}

/// Registers `emtrack_build_info` and the `process_*` metrics.
pub fn register_process(r: &Registry) {
    let info = IntGaugeVec::new(
        Opts::new(
            "emtrack_build_info",
            "Always 1; the version of the running emtrack as a label.",
        ),
        &["version"],
    )
    .expect(REGISTERED);
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    r.register(Box::new(info)).expect(REGISTERED);
    // CPU seconds, resident and virtual memory, open and maximum file
    // descriptors, start time (Linux; read from /proc at scrape time).
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect(REGISTERED);
}

/// Registers `emtrack_lease_active`, read from `active` at scrape time.
pub fn register_role(r: &Registry, active: Arc<AtomicBool>) {
    let gauge = IntGauge::new(
        "emtrack_lease_active",
        "1 on the active node (it holds the service lease), 0 on a standby.",
    )
    .expect(REGISTERED);
    r.register(Box::new(Scraped {
        descs: gauge.desc().into_iter().cloned().collect(),
        read: Box::new(move || {
            gauge.set(i64::from(active.load(Ordering::Relaxed)));
            gauge.collect()
        }),
    }))
    .expect(REGISTERED);
}

/// Registers the database pool's gauges:
/// `emtrack_db_pool_connections{state="idle|in_use"}` and
/// `emtrack_db_pool_max_connections`.
pub fn register_pool(r: &Registry, pool: PgPool) {
    let connections = IntGaugeVec::new(
        Opts::new(
            "emtrack_db_pool_connections",
            "Open database connections of the pool, by state.",
        ),
        &["state"],
    )
    .expect(REGISTERED);
    let max = IntGauge::new(
        "emtrack_db_pool_max_connections",
        "The most connections the pool opens.",
    )
    .expect(REGISTERED);
    let descs = connections
        .desc()
        .into_iter()
        .chain(max.desc())
        .cloned()
        .collect();
    r.register(Box::new(Scraped {
        descs,
        read: Box::new(move || {
            let size = i64::from(pool.size());
            let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            connections.with_label_values(&["idle"]).set(idle);
            connections
                .with_label_values(&["in_use"])
                .set((size - idle).max(0));
            max.set(i64::from(pool.options().get_max_connections()));
            let mut out = connections.collect();
            out.extend(max.collect());
            out
        }),
    }))
    .expect(REGISTERED);
}

/// Registers `emtrack_engine_objects{kind="zones|subjects|devices"}`: the
/// reference data the engine holds.
pub fn register_engine(r: &Registry, core: SharedCore) {
    let objects = IntGaugeVec::new(
        Opts::new(
            "emtrack_engine_objects",
            "Reference data loaded in the engine, by kind.",
        ),
        &["kind"],
    )
    .expect(REGISTERED);
    r.register(Box::new(Scraped {
        descs: objects.desc().into_iter().cloned().collect(),
        read: Box::new(move || {
            let n = core.counts();
            for (kind, count) in [
                ("zones", n.zones),
                ("subjects", n.subjects),
                ("devices", n.devices),
            ] {
                objects
                    .with_label_values(&[kind])
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            objects.collect()
        }),
    }))
    .expect(REGISTERED);
}

/// Metrics whose values are read when scraped.
struct Scraped {
    descs: Vec<Desc>,
    read: Box<dyn Fn() -> Vec<MetricFamily> + Send + Sync>,
}

impl Collector for Scraped {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        (self.read)()
    }
}
