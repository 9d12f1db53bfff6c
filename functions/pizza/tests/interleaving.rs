//! Concurrent checkouts and cart changes on one cart, interleaved at every kv call in many seeded
//! random orders: no line is lost or ordered twice, and an idempotency key yields one order.

mod support;

use std::collections::BTreeSet;

use pizza::checkout::{self, Checkout, CheckoutRequest};
use pizza::order::Order;
use pizza::store;
use pizza::{ApiError, Kv};
use support::{MemoryKv, Scheduler, new_line, no_pause};

const SESSION: &str = "0123456789abcdef0123456789abcdef";

/// How many interleavings to try; each runs every client on its own thread.
const SEEDS: u64 = 300;

/// What one concurrent request does.
#[derive(Debug, Clone, Copy)]
enum Client {
    Checkout {
        order_id: &'static str,
        key: Option<&'static str>,
    },
    Add(&'static str),
    Remove(u64),
}

/// What it got back.
#[derive(Debug)]
enum Answer {
    Checkout(Result<Checkout, ApiError>),
    Add(Result<u64, ApiError>),
    Remove(Result<u64, ApiError>),
}

const CLIENTS: [Client; 6] = [
    Client::Checkout {
        order_id: "a",
        key: Some("k1"),
    },
    Client::Checkout {
        order_id: "b",
        key: Some("k1"),
    },
    Client::Add(r#"{"item":"pepperoni","size":"small"}"#),
    Client::Checkout {
        order_id: "c",
        key: None,
    },
    Client::Remove(1),
    Client::Add(r#"{"item":"coke"}"#),
];

fn run(client: Client, kv: &dyn Kv) -> Answer {
    match client {
        Client::Checkout { order_id, key } => {
            let request = CheckoutRequest {
                session: SESSION.to_owned(),
                order_id: order_id.to_owned(),
                created_at: "2025-03-01T12:00:00Z".to_owned(),
                idempotency_key: key.map(str::to_owned),
            };
            Answer::Checkout(checkout::checkout(kv, &no_pause, &request))
        }
        Client::Add(body) => {
            let line = new_line(body);
            Answer::Add(
                store::update(kv, SESSION, &no_pause, |cart| cart.add(&line)).map(|(_, id)| id),
            )
        }
        Client::Remove(id) => Answer::Remove(
            store::update(kv, SESSION, &no_pause, |cart| cart.remove(id)).map(|(_, line)| line.id),
        ),
    }
}

/// Runs every client concurrently under the interleaving of `seed` and checks the outcome.
fn check_interleaving(seed: u64) {
    let kv = MemoryKv::default();
    for body in [
        r#"{"item":"margherita","size":"large"}"#,
        r#"{"item":"hawaiian","size":"medium"}"#,
    ] {
        let line = new_line(body);
        store::update(&kv, SESSION, &no_pause, |cart| cart.add(&line)).unwrap();
    }

    let scheduler = Scheduler::new(CLIENTS.len(), seed);
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let threads: Vec<_> = CLIENTS
            .iter()
            .enumerate()
            .map(|(index, &client)| {
                let scheduler = &scheduler;
                let kv = &kv;
                scope.spawn(move || run(client, &scheduler.client(kv, index)))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("client panicked"))
            .collect()
    });

    // Every line that ever existed and was not removed is in exactly one place.
    let mut expected: BTreeSet<u64> = [1, 2].into();
    let mut returned_orders: Vec<(Option<&str>, &Checkout)> = Vec::new();
    for (client, answer) in CLIENTS.iter().zip(&answers) {
        match (client, answer) {
            (_, Answer::Add(Ok(id))) => {
                assert!(expected.insert(*id), "seed {seed}: line id {id} reused")
            }
            (_, Answer::Remove(Ok(id))) => assert!(expected.remove(id)),
            (_, Answer::Remove(Err(ApiError::NotFound(_)))) => {}
            (Client::Checkout { key, .. }, Answer::Checkout(Ok(checkout))) => {
                returned_orders.push((*key, checkout))
            }
            (_, Answer::Checkout(Err(ApiError::CartEmpty))) => {}
            (client, answer) => panic!("seed {seed}: {client:?} got {answer:?}"),
        }
    }
    let stored = kv.cart(SESSION).unwrap();
    assert_eq!(
        stored.pending, None,
        "seed {seed}: a pending order was left behind"
    );
    let orders = kv.orders();
    let mut placed: Vec<u64> = orders
        .iter()
        .flat_map(|order| order.lines.iter().map(|line| line.id))
        .collect();
    placed.extend(stored.lines.iter().map(|line| line.id));
    placed.sort_unstable();
    assert_eq!(
        placed,
        expected.into_iter().collect::<Vec<_>>(),
        "seed {seed}: {orders:#?} {stored:#?}"
    );

    // Every answered order is stored as answered, and is not empty.
    for (_, checkout) in &returned_orders {
        let (Checkout::Created(order) | Checkout::Replayed(order)) = checkout;
        assert!(!order.lines.is_empty());
        assert!(
            orders.contains(order),
            "seed {seed}: answered {order:?} is not stored"
        );
    }

    // One key, one order: both requests with k1 that succeeded got the same one, exactly one of
    // them created it, and only one stored order carries the key.
    let with_k1: Vec<&Checkout> = returned_orders
        .iter()
        .filter(|(key, _)| *key == Some("k1"))
        .map(|(_, checkout)| *checkout)
        .collect();
    let ids: BTreeSet<&str> = with_k1
        .iter()
        .map(|checkout| match checkout {
            Checkout::Created(order) | Checkout::Replayed(order) => order.id.as_str(),
        })
        .collect();
    assert!(ids.len() <= 1, "seed {seed}: one key gave orders {ids:?}");
    let created = with_k1
        .iter()
        .filter(|checkout| matches!(checkout, Checkout::Created(_)))
        .count();
    assert!(created <= 1, "seed {seed}: both k1 requests created");
    let keyed: Vec<&Order> = orders
        .iter()
        .filter(|order| order.idempotency_key.as_deref() == Some("k1"))
        .collect();
    assert!(keyed.len() <= 1, "seed {seed}: {keyed:?}");
}

#[test]
fn concurrent_checkouts_and_changes_never_lose_or_duplicate_a_line() {
    for seed in 0..SEEDS {
        check_interleaving(seed);
    }
}
