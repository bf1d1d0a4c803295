//! The routing snapshot's two costs: what every request pays to find its pool (one ArcSwap load
//! and one Arc clone), and what a switch costs (build the next snapshot, one pointer store).
//!
//! Run: `cargo bench --bench snapshot`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use turnout_config::Config;
use turnout_core::{Command, Control, Router, RoutingSnapshot};

fn router() -> Router {
    let config = Config::parse(
        "[pools.blue]\nservers=[\"127.0.0.1:3000\",\"127.0.0.1:3001\"]\n\
         [pools.green]\nservers=[\"127.0.0.1:4000\",\"127.0.0.1:4001\"]\n[routing]\nactive=\"blue\"\n",
        std::path::Path::new("bench.toml"),
    )
    .expect("config");
    Router::new(RoutingSnapshot::bootstrap(&config, None).expect("snapshot"))
}

fn snapshot(c: &mut Criterion) {
    let router = router();
    c.bench_function(
        "route: load snapshot, pick upstream, count in flight",
        |b| {
            b.iter(|| {
                let pool = router.active();
                let upstream = pool.pick().expect("server").authority.clone();
                let guard = pool.begin_request();
                black_box((&upstream, &guard));
            })
        },
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let control = Control::new(router.clone(), None);
    let mut to_green = true;
    c.bench_function("switch: apply + publish (no state file)", |b| {
        b.iter(|| {
            let to = if to_green { "green" } else { "blue" };
            to_green = !to_green;
            rt.block_on(control.apply(Command::Switch { to: to.into() }, false))
                .expect("switch");
        })
    });
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
