//! The core driven the way `emtrack` drives it, on tokio's paused clock: a
//! one-second tick polls the silence wheel, and the task sleeps until the
//! book's next escalation deadline. Time only moves when every task waits, so
//! each check lands on the exact second, deterministically and instantly.

use alerts::{
    AlertBook, AlertId, AlertKey, AlertType, Change, Policy, Raised, SilenceEvent, SilenceWheel,
};
use std::time::Duration;
use tokio::time::{Instant, interval, sleep_until};

/// Seconds since the test's epoch, from the (paused) tokio clock.
fn secs(start: Instant) -> u64 {
    (Instant::now() - start).as_secs()
}

/// 100,000 bracelets report every 60 s; every 100th stops after 30 min. The
/// wheel, polled by a 1 s interval, reports exactly those, each once, at
/// its deadline (last message + 120 s); each comes back online on its one
/// later message (at 6,000 s) and is reported silent again 120 s after it. Memory per device is printed and bounded.
#[tokio::test(start_paused = true)]
async fn silence_at_scale_on_a_paused_clock() {
    const N: u32 = 100_000;
    const ALLOWANCE: u64 = 120;
    let start = Instant::now();
    let mut wheel = SilenceWheel::new(4_096, 0);
    for d in 0..N {
        wheel.watch(d, ALLOWANCE as u32, 0);
    }
    let stops = |d: u32| d.is_multiple_of(100).then(|| 1_800 + u64::from(d % 600));
    let mut tick = interval(Duration::from_secs(1));
    let mut fired: Vec<(u32, u64, u64)> = Vec::new();
    let mut back = Vec::new();
    let mut out = Vec::new();
    loop {
        tick.tick().await;
        let t = secs(start);
        if t > 7_200 {
            break;
        }
        // Device d reports at seconds ≡ d (mod 60); the stopped ones speak
        // once more at 6,000 s.
        for d in ((t % 60) as u32..N).step_by(60) {
            if stops(d).is_none_or(|s| t < s) {
                assert!(wheel.seen(d, t).is_none(), "device {d} was never silent");
            }
        }
        if t == 6_000 {
            for d in (0..N).filter(|d| stops(*d).is_some()) {
                back.extend(wheel.seen(d, t));
            }
        }
        wheel.poll(t, &mut out);
        for e in out.drain(..) {
            if let SilenceEvent::NoCommunication {
                device,
                last_seen_s,
                deadline_s,
            } = e
            {
                assert_eq!(deadline_s, t, "fired at its deadline, not later");
                fired.push((device, last_seen_s, t));
            }
        }
    }
    let mut expected: Vec<(u32, u64, u64)> = (0..N)
        .filter_map(|d| {
            let s = stops(d)?;
            let last = (s - 1) - ((s - 1 + 60 - u64::from(d % 60)) % 60);
            Some((d, last, last + ALLOWANCE))
        })
        // After their one message at 6,000 s they fall silent again.
        .chain(
            (0..N)
                .filter(|d| stops(*d).is_some())
                .map(|d| (d, 6_000, 6_000 + ALLOWANCE)),
        )
        .collect();
    fired.sort();
    expected.sort();
    assert_eq!(fired.len(), 2_000);
    assert_eq!(fired, expected, "exactly the silent ones, once, on time");
    assert_eq!(back.len(), 1_000, "each silent one back online once");
    assert!(
        back.iter()
            .all(|e| matches!(e, SilenceEvent::BackOnline { at_s: 6_000, .. }))
    );
    let per_device = wheel.memory_bytes() as f64 / f64::from(N);
    eprintln!(
        "silence wheel on a paused clock: {per_device:.1} bytes per device at 100,000 devices"
    );
    assert!(per_device < 64.0, "{per_device} bytes per device");
}

/// Escalation as the service runs it: sleep until the book's next deadline,
/// escalate what is due. A critical alert goes to the supervisor at 5 min and
/// the duty desk at 10; a serious one at 15 min; an acknowledged one stops;
/// an info alert never escalates.
#[tokio::test(start_paused = true)]
async fn escalation_deadlines_on_a_paused_clock() {
    let start = Instant::now();
    let ms = || (Instant::now() - start).as_millis() as i64;
    let mut book = AlertBook::new(Policy::default(), 0);
    let key = |kind, subject| AlertKey {
        subject,
        kind,
        scope: 0,
        episode_ms: 0,
    };
    let Raised::New(crit) = book.raise(key(AlertType::StrapTamper, 1), 0, false, ms()) else {
        panic!("new")
    };
    let Raised::New(serious) = book.raise(key(AlertType::CurfewViolation, 2), 0, false, ms())
    else {
        panic!("new")
    };
    let Raised::New(acked) = book.raise(key(AlertType::InclusionZoneLeft, 3), 0, false, ms())
    else {
        panic!("new")
    };
    let Raised::New(_info) = book.raise(key(AlertType::BatteryLow, 4), 0, false, ms()) else {
        panic!("new")
    };
    tokio::time::sleep(Duration::from_secs(60)).await;
    book.acknowledge(acked, 9, Some("calling the subject".into()), ms())
        .expect("acknowledged");
    let mut seen: Vec<(AlertId, u8, i64)> = Vec::new();
    while let Some(deadline) = book.next_deadline() {
        sleep_until(start + Duration::from_millis(deadline as u64)).await;
        for (id, level) in book.escalate_due(ms()) {
            seen.push((id, level, ms() / 1000));
        }
    }
    assert_eq!(
        seen,
        vec![
            (crit, 1, 300),
            (crit, 2, 600),
            (serious, 1, 900),
            (serious, 2, 1_800)
        ],
        "(alert, level, second)"
    );
    let escalations = book
        .take_events()
        .into_iter()
        .filter(|e| matches!(e.what, Change::Escalated(_)))
        .count();
    assert_eq!(escalations, 4, "every escalation is an alert event");
}
