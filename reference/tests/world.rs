//! `import-world` on real PostgreSQL: a device-sim export imports, and
//! importing it again changes nothing. Each `#[sqlx::test]` runs in a fresh
//! database (see `.cargo/config.toml`).

use device_sim::world::{World, WorldConfig};
use sqlx::PgPool;

#[sqlx::test(migrator = "store::MIGRATOR")]
async fn a_world_imports_and_reimports_unchanged(pool: PgPool) {
    let world = World::generate(WorldConfig {
        seed: 4,
        subjects: 150,
        ..WorldConfig::default()
    });
    let dir = std::env::temp_dir().join(format!("emtrack-import-{}", std::process::id()));
    world.write_dir(&dir).expect("writes");
    let n = reference::world::import(&pool, &dir)
        .await
        .expect("imports");
    assert_eq!(n.subjects, 150);
    assert_eq!(n.zones, world.zones().count());
    assert_eq!(n.devices, 150 + world.victims.len());
    assert_eq!(
        n.rules,
        world.subjects.iter().map(|s| s.rules.len()).sum::<usize>()
    );

    let stamp = "SELECT max(updated_at) FROM zones";
    let before: String = sqlx::query_scalar(&format!("SELECT ({stamp})::text"))
        .fetch_one(&pool)
        .await
        .expect("stamp");
    let again = reference::world::import(&pool, &dir)
        .await
        .expect("imports again");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(again, n);
    let after: String = sqlx::query_scalar(&format!("SELECT ({stamp})::text"))
        .fetch_one(&pool)
        .await
        .expect("stamp");
    assert_eq!(
        before, after,
        "an unchanged zone is not touched (no spurious change events)"
    );

    for (table, expected) in [
        ("subjects", 150),
        ("assignments", 150),
        ("victims", world.victims.len() as i64),
    ] {
        let got: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(got, expected, "{table}");
    }
    let curfew: serde_json::Value = sqlx::query_scalar("SELECT schedule FROM rules WHERE id = 11")
        .fetch_one(&pool)
        .await
        .expect("subject 1's curfew");
    assert_eq!(curfew["tz"], "Asia/Almaty");
    assert_eq!(curfew["windows"][0]["end"], "06:00");
}
