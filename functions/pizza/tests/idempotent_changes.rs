//! Cart adds and removes with an `Idempotency-Key`, against kv: a retry after a crash at any kv
//! call, or racing its first try, changes the cart once; and a checkout does not make the cart
//! forget the keys.

mod support;

use pizza::cart::{Change, Changed};
use pizza::checkout::{self, Checkout, CheckoutRequest};
use pizza::store::{self, CART_TTL_SECONDS, Session};
use pizza::{ApiError, Kv};
use support::{Crash, Crashing, MemoryKv, Scheduler, new_line, no_pause};

const SESSION: &str = "0123456789abcdef0123456789abcdef";

fn add_pepperoni() -> Change {
    Change::Add(new_line(r#"{"item":"pepperoni","size":"large","qty":3}"#))
}

fn change(kv: &dyn Kv, change: &Change, key: &str) -> Result<Changed, ApiError> {
    store::change(kv, SESSION, Session::Known, &no_pause, change, Some(key))
        .map(|(_, changed)| changed)
}

fn line_ids(kv: &MemoryKv) -> Vec<u64> {
    kv.cart(SESSION)
        .map(|cart| cart.lines.iter().map(|line| line.id).collect())
        .unwrap_or_default()
}

#[test]
fn a_retried_add_is_stored_once_and_answers_the_same_line() {
    let kv = MemoryKv::default();
    assert_eq!(change(&kv, &add_pepperoni(), "a1"), Ok(Changed::Applied(1)));
    assert_eq!(
        change(&kv, &add_pepperoni(), "a1"),
        Ok(Changed::Replayed(1))
    );
    assert_eq!(line_ids(&kv), [1]);
}

#[test]
fn a_replay_writes_nothing() {
    let kv = MemoryKv::default();
    change(&kv, &add_pepperoni(), "a1").unwrap();
    let before = kv.entry(&store::cart_key(SESSION));
    let (cart, changed) = store::change(
        &kv,
        SESSION,
        Session::Known,
        &no_pause,
        &add_pepperoni(),
        Some("a1"),
    )
    .unwrap();
    assert_eq!(changed, Changed::Replayed(1));
    assert_eq!(kv.entry(&store::cart_key(SESSION)), before);
    assert_eq!(
        Some(cart),
        kv.cart(SESSION),
        "the replay answers the stored cart"
    );
    assert_eq!(before.unwrap().ttl_seconds, Some(CART_TTL_SECONDS));
}

#[test]
fn a_retried_remove_replays_instead_of_answering_not_found() {
    let kv = MemoryKv::default();
    change(&kv, &add_pepperoni(), "a1").unwrap();
    change(&kv, &add_pepperoni(), "a2").unwrap();
    assert_eq!(
        change(&kv, &Change::Remove(1), "r1"),
        Ok(Changed::Applied(1))
    );
    assert_eq!(
        change(&kv, &Change::Remove(1), "r1"),
        Ok(Changed::Replayed(1))
    );
    assert_eq!(line_ids(&kv), [2]);
}

/// Crashes a keyed add at every kv call in turn, both before the call reaches the store and after
/// it took effect with its answer lost, then retries with the same key as a client would: the
/// cart ends with exactly one line, and the retry says whether it made it or replays it.
#[test]
fn a_keyed_add_crashed_at_any_kv_call_then_retried_adds_one_line() {
    let clean_run = {
        let kv = MemoryKv::default();
        let counting = Crashing::new(&kv, Crash::Before(usize::MAX));
        change(&counting, &add_pepperoni(), "a1").unwrap();
        counting.calls()
    };
    assert_eq!(clean_run, 2, "read, compare-and-swap");

    for at in 0..clean_run {
        for crash in [Crash::Before(at), Crash::After(at)] {
            let kv = MemoryKv::default();
            let first = change(&Crashing::new(&kv, crash), &add_pepperoni(), "a1");
            assert!(
                matches!(first, Err(ApiError::Unavailable(_))),
                "{crash:?}: {first:?}"
            );
            let stored_before_retry = line_ids(&kv);
            let retried = change(&kv, &add_pepperoni(), "a1");
            match (stored_before_retry.as_slice(), retried) {
                ([], Ok(Changed::Applied(1))) | ([1], Ok(Changed::Replayed(1))) => {}
                (stored, retried) => panic!("{crash:?}: {stored:?} then {retried:?}"),
            }
            assert_eq!(line_ids(&kv), [1], "{crash:?}");
        }
    }
}

/// The same, for a checkout that crashed while the add's answer was on its way: the line went
/// into an order, and the retried add must not put it back into the emptied cart.
#[test]
fn a_keyed_add_retried_after_its_line_was_checked_out_is_not_added_again() {
    let kv = MemoryKv::default();
    assert_eq!(change(&kv, &add_pepperoni(), "a1"), Ok(Changed::Applied(1)));
    let request = CheckoutRequest {
        session: SESSION.to_owned(),
        order_id: "o1".to_owned(),
        created_at: "2025-03-01T12:00:00Z".to_owned(),
        idempotency_key: None,
    };
    let Ok(Checkout::Created(order)) = checkout::checkout(&kv, &no_pause, &request) else {
        panic!("checkout failed");
    };
    assert_eq!(
        change(&kv, &add_pepperoni(), "a1"),
        Ok(Changed::Replayed(1))
    );
    assert_eq!(line_ids(&kv), Vec::<u64>::new());
    assert_eq!(kv.orders(), [order]);
}

/// The one add a client sends, and the retry it sends on another host because the first answer
/// was lost, run concurrently; plus a keyed remove and its retry, and a checkout that may take
/// the line first.
#[derive(Debug, Clone, Copy)]
enum Client {
    Add,
    Remove,
    Checkout,
}

fn run(client: Client, kv: &dyn Kv) -> Result<Changed, ApiError> {
    match client {
        Client::Add => change(kv, &add_pepperoni(), "add-once"),
        Client::Remove => change(kv, &Change::Remove(1), "remove-once"),
        Client::Checkout => {
            let request = CheckoutRequest {
                session: SESSION.to_owned(),
                order_id: "o1".to_owned(),
                created_at: "2025-03-01T12:00:00Z".to_owned(),
                idempotency_key: Some("c1".to_owned()),
            };
            match checkout::checkout(kv, &no_pause, &request) {
                // Stands for "the checkout took these lines"; its line ids are checked from kv.
                Ok(Checkout::Created(_) | Checkout::Replayed(_)) => Ok(Changed::Applied(0)),
                Err(error) => Err(error),
            }
        }
    }
}

const CLIENTS: [Client; 5] = [
    Client::Add,
    Client::Add,
    Client::Remove,
    Client::Remove,
    Client::Checkout,
];

fn check_interleaving(seed: u64) {
    let kv = MemoryKv::default();
    // Line 1, which the keyed removes target.
    store::update(&kv, SESSION, &no_pause, |cart| {
        cart.add(&new_line(r#"{"item":"coke"}"#))
    })
    .unwrap();

    let scheduler = Scheduler::new(CLIENTS.len(), seed);
    let answers: Vec<Result<Changed, ApiError>> = std::thread::scope(|scope| {
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

    // The add and its retry: one made it, the other replayed it, both name the same line.
    let adds = [&answers[0], &answers[1]];
    let Some(added) = adds.iter().find_map(|answer| match answer {
        Ok(Changed::Applied(id)) => Some(*id),
        _ => None,
    }) else {
        panic!("seed {seed}: neither add applied: {answers:?}");
    };
    for answer in adds {
        assert!(
            matches!(answer, Ok(Changed::Applied(id) | Changed::Replayed(id)) if *id == added),
            "seed {seed}: {answers:?}"
        );
    }
    assert_eq!(
        adds.iter()
            .filter(|answer| matches!(answer, Ok(Changed::Applied(_))))
            .count(),
        1,
        "seed {seed}: {answers:?}"
    );

    // The remove and its retry: line 1 was removed at most once, and if it was, both say so
    // (a checkout that took line 1 first leaves both with 404).
    let removes = [&answers[2], &answers[3]];
    let removed = removes
        .iter()
        .filter(|answer| matches!(answer, Ok(Changed::Applied(1))))
        .count();
    match removed {
        0 => assert!(
            removes
                .iter()
                .all(|answer| matches!(answer, Err(ApiError::NotFound(_)))),
            "seed {seed}: {answers:?}"
        ),
        1 => assert!(
            removes
                .iter()
                .all(|answer| matches!(answer, Ok(Changed::Applied(1) | Changed::Replayed(1)))),
            "seed {seed}: {answers:?}"
        ),
        _ => panic!("seed {seed}: line 1 removed twice: {answers:?}"),
    }

    // Every line is in exactly one place: the added line once, line 1 unless removed.
    let mut placed: Vec<u64> = kv
        .orders()
        .iter()
        .flat_map(|order| order.lines.iter().map(|line| line.id))
        .collect();
    placed.extend(line_ids(&kv));
    placed.sort_unstable();
    let mut expected = vec![added];
    if removed == 0 {
        expected.push(1);
    }
    expected.sort_unstable();
    assert_eq!(placed, expected, "seed {seed}: {answers:?}");
    assert!(
        kv.orders().len() <= 1,
        "seed {seed}: one checkout key, one order"
    );
}

#[test]
fn concurrent_retries_of_one_keyed_add_or_remove_change_the_cart_once() {
    for seed in 0..300 {
        check_interleaving(seed);
    }
}
