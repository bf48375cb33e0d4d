//! Micro-benchmarks: the allocator (in process, fake probe) and registry load/save, at 10,
//! 100, 1,000 and 10,000 worktrees x 5 services. `cargo bench --bench allocator`.
//! The cost must grow no worse than linearly with the registry.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use git_worktree_ports::model::allocate::{Holder, Probe, Request, allocate};
use git_worktree_ports::model::config::{Protocol, Service, Strategy};
use git_worktree_ports::registry::{self, Lock, Paths, Registry};
use serde_json::json;

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const SPAN: u16 = 12_000;

/// Every port is free: the cost measured is the allocator's, not the kernel's.
struct AllFree;

impl Probe for AllFree {
    fn is_free(&self, _: u16, _: Protocol) -> bool {
        true
    }
    fn holder(&self, _: u16, _: Protocol) -> Option<Holder> {
        None
    }
}

fn services() -> Vec<Service> {
    (0..5u16)
        .map(|s| Service {
            name: format!("svc{s}"),
            range: (1100 + s * SPAN, 1100 + s * SPAN + SPAN - 1),
            env: format!("SVC{s}_PORT"),
            protocol: Protocol::Tcp,
            offset: s,
            http: false,
            well_known: &[],
        })
        .collect()
}

/// `n` worktrees as a real registry holds them (ports, a record each, a full history), each
/// holding the next port of every service's range: the worst case for a new allocation,
/// which must skip all of them. Built as JSON and parsed, as a command gets it.
pub fn registry(n: usize) -> Registry {
    let mut ports = serde_json::Map::new();
    let mut records = serde_json::Map::new();
    for i in 0..n {
        let name = format!("worktree-{i:05}");
        let p: serde_json::Map<String, serde_json::Value> = (0..5u16)
            .map(|s| (format!("svc{s}"), json!(1100 + s * SPAN + i as u16)))
            .collect();
        ports.insert(name.clone(), p.into());
        records.insert(
            name.clone(),
            json!({
                "path": format!("/home/dev/src/project/.worktrees/{name}"),
                "branch": format!("feature/{name}"),
                "allocated_at": "2026-11-23T08:00:00Z",
            }),
        );
    }
    // History is in history.jsonl: a registry this version writes holds none.
    let doc = json!({"version": 1, "port_ranges": {}, "allocated_ports": ports,
        "worktrees": records, "history": []});
    registry::parse(&serde_json::to_vec(&doc).unwrap()).unwrap()
}

fn bench_allocate(c: &mut Criterion) {
    let services = services();
    let mut group = c.benchmark_group("allocate a new worktree");
    for n in SIZES {
        let reg = registry(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // What a command does: build the taken set from the registry, then allocate.
                let taken = reg.taken();
                let alloc = allocate(
                    &Request {
                        strategy: Strategy::Ranges,
                        worktree: "new",
                        services: &services,
                        current: &BTreeMap::new(),
                        wants: &BTreeMap::new(),
                        taken: &taken,
                        reserved: &[],
                        avoid: &[],
                        block: None,
                    },
                    &AllFree,
                )
                .unwrap();
                black_box(alloc)
            })
        });
    }
    group.finish();
}

fn bench_registry(c: &mut Criterion) {
    let mut parse = c.benchmark_group("registry parse + validate");
    for n in SIZES {
        let bytes = registry(n).to_bytes();
        parse.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| black_box(registry::parse(bytes).unwrap()))
        });
    }
    parse.finish();

    let mut ser = c.benchmark_group("registry serialize");
    for n in SIZES {
        let reg = registry(n);
        ser.bench_with_input(BenchmarkId::from_parameter(n), &reg, |b, reg| {
            b.iter(|| black_box(reg.to_bytes()))
        });
    }
    ser.finish();

    let mut save = c.benchmark_group("registry save (ports.json fsynced, then its backup)");
    save.measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for n in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let lock = Lock::acquire(&paths, Duration::from_secs(5), &|_| {}).unwrap();
        let mut reg = registry(n);
        save.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| lock.save(&mut reg).unwrap())
        });
    }
    save.finish();
}

criterion_group!(benches, bench_allocate, bench_registry);
criterion_main!(benches);
