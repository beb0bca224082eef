//! The rights check on the send path: a snapshot of 1,000 organisations (10 departments and
//! 100 members each: 100,000 members), then `check_send` plus the address-to-queue lookup the
//! hub does for every message.

use std::{collections::HashMap, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard_hub::org::{Actor, Change, Command, OrgState};

const ORGS: usize = 1_000;
const UNITS: usize = 10;
const MEMBERS: usize = 100;

fn build() -> (OrgState, HashMap<String, u64>) {
    let mut state = OrgState::default();
    let mut directory = HashMap::new();
    for o in 0..ORGS {
        let domain = format!("org{o}.example");
        let owner = format!("owner@{domain}");
        let create = Command::CreateOrg {
            name: format!("Org {o}"),
            owner: owner.clone(),
            domain: domain.clone(),
            line: format!("main@{domain}"),
            seat_limit: Some(1_000),
        };
        let Change::OrgCreated { org, .. } =
            state.execute(&Actor::Operator, create, 0).unwrap().change
        else {
            unreachable!()
        };
        let owner = Actor::User(owner);
        let mut units = Vec::new();
        for u in 0..UNITS {
            let line = format!("dept{u}@{domain}");
            let command =
                Command::CreateUnit { org: org.id, parent: org.root, name: line.clone(), line };
            let Change::UnitCreated(unit) = state.execute(&owner, command, 0).unwrap().change
            else {
                unreachable!()
            };
            directory.insert(unit.address.clone(), unit.id.0);
            units.push(unit.id);
        }
        for m in 0..MEMBERS {
            let user = format!("m{m}@{domain}");
            state
                .execute(&Actor::User(user.clone()), Command::Register { org: org.id }, 0)
                .unwrap();
            state.execute(&owner, Command::Approve { org: org.id, user: user.clone() }, 0).unwrap();
            let unit = units[m % UNITS];
            state
                .execute(&owner, Command::Assign { org: org.id, user: user.clone(), unit }, 0)
                .unwrap();
            directory.insert(user, m as u64);
        }
    }
    (state, directory)
}

fn rights(c: &mut Criterion) {
    let (state, directory) = build();
    let mut group = c.benchmark_group("org_send_check");
    group.bench_function("member_to_user", |b| {
        b.iter(|| {
            let route = state.check_send(
                black_box("m1@org500.example"),
                black_box("m1@org500.example"),
                black_box("m2@org500.example"),
                false,
            );
            (route.is_ok(), directory.get(black_box("m2@org500.example")).copied())
        })
    });
    group.bench_function("member_to_department_line", |b| {
        b.iter(|| {
            let route = state.check_send(
                black_box("m1@org500.example"),
                black_box("m1@org500.example"),
                black_box("dept3@org500.example"),
                false,
            );
            (route.is_ok(), directory.get(black_box("dept3@org500.example")).copied())
        })
    });
    group.bench_function("member_as_line_to_outsider", |b| {
        b.iter(|| {
            let route = state.check_send(
                black_box("m1@org500.example"),
                black_box("dept1@org500.example"),
                black_box("someone@elsewhere.example"),
                true,
            );
            (route.is_ok(), directory.get(black_box("someone@elsewhere.example")).copied())
        })
    });
    group.bench_function("outsider_refused_by_department_line", |b| {
        b.iter(|| {
            state
                .check_send(
                    black_box("x@elsewhere.example"),
                    black_box("x@elsewhere.example"),
                    black_box("dept3@org500.example"),
                    false,
                )
                .is_err()
        })
    });
    group.finish();
}

criterion_group!(benches, rights);
criterion_main!(benches);
