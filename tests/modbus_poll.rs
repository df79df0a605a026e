//! One poll of one unit (`edgewatch::source::modbus::poll::poll_unit`) against the real
//! simulator: splitting a merged read on exception 2 around an undefined address, retries of
//! fast failures, a timed-out read never repeated in the same poll, and a silent unit that
//! costs one timeout. Every test is bounded by
//! [`TEST_TIMEOUT`](support::modbus_link::TEST_TIMEOUT).

mod support;

use std::time::Duration;

use edgewatch::modbus::{DataType, Limits, Planner, PointSpec, Table};
use edgewatch::source::modbus::link::LinkError;
use edgewatch::source::modbus::poll::{Outcome, Policy, UnitPoll, poll_unit};
use support::modbus::{self, Fault, ModbusSim, SimOptions};
use support::modbus_link::{bounded, tcp_link};

const TIMEOUT: Duration = Duration::from_millis(300);

/// Holding u16 points named `p{address}`, planned with the default limits (gaps up to 8
/// registers merged).
fn planner(addresses: &[u16]) -> Planner {
    let points = addresses
        .iter()
        .map(|&a| PointSpec::new(format!("p{a}"), Table::Holding, a, DataType::U16))
        .collect();
    Planner::new(points, Limits::default())
}

const UP: Policy = Policy {
    attempts: 2,
    stop_on_failure: true,
};

const DOWN: Policy = Policy {
    attempts: 1,
    stop_on_failure: true,
};

fn values(poll: &UnitPoll) -> Vec<(usize, f64)> {
    poll.values().map(|(_, p, v)| (p, v)).collect()
}

/// A simulator whose tick stays 0 for the whole test: the counter at holding 10-11 is fixed.
fn still_sim() -> ModbusSim {
    ModbusSim::tcp(
        SimOptions::default()
            .tick(Duration::from_secs(3600))
            .request_log(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exception_2_splits_the_read_until_the_undefined_address_is_isolated() {
    bounded(async {
        let sim = still_sim();
        let mut link = tcp_link(&sim, TIMEOUT);
        // Holding 5 is undefined in the simulator; 0, 1 and 11 are not. One merged read.
        let mut planners = vec![planner(&[0, 1, 5, 11])];
        assert_eq!(planners[0].reads().len(), 1);
        let poll = poll_unit(&mut link, 2, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, None, "exception 2 does not fail the unit");
        let expected = [
            (0, 2.0),
            (1, f64::from(modbus::HR_BITS_VALUE)),
            (3, f64::from(modbus::counter(0) as u16)),
        ];
        assert_eq!(values(&poll), expected);
        assert!(
            poll.reads
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Bad(2))),
            "{:?}",
            poll.reads
        );
        assert_eq!(planners[0].bad_points()[0].name, "p5");
        assert_eq!(sim.requests().len(), poll.requests());
        // The next poll uses the adapted plan: no exception any more.
        let before = sim.requests().len();
        let poll = poll_unit(&mut link, 2, &mut planners, &[0], UP).await;
        assert_eq!(values(&poll), expected);
        assert!(poll.attempts.iter().all(|a| a.error.is_none()));
        assert_eq!(sim.requests().len() - before, poll.requests());
        assert!(poll.requests() <= 2, "{:?}", poll.reads);
        assert!(
            sim.requests()[before..]
                .iter()
                .all(|r| !(r.address..r.address + r.count).contains(&5)),
            "the undefined address is not read again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_failure_is_retried_while_the_policy_allows() {
    bounded(async {
        let mut sim = still_sim();
        let mut link = tcp_link(&sim, TIMEOUT);
        let mut planners = vec![planner(&[0])];
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(values(&poll), [(0, 1.0)]);

        // The connection is gone under the link: the first attempt fails at once, the retry
        // connects again and is answered.
        sim.restart();
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, None);
        assert_eq!(poll.requests(), 2);
        assert!(
            matches!(
                poll.attempts[0].error,
                Some(LinkError::Closed | LinkError::Reset)
            ),
            "{:?}",
            poll.attempts
        );
        assert_eq!(values(&poll), [(0, 1.0)]);
        assert_eq!(link.opens(), 2);

        // A device that keeps answering "busy": 1 + retries attempts while up, 1 while down.
        sim.set_faults(&[Fault::exception(6).unit(1)]);
        let before = sim.requests().len();
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, Some(LinkError::Exception(6)));
        assert_eq!(poll.requests(), 2);
        assert_eq!(sim.requests().len() - before, 2);
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], DOWN).await;
        assert_eq!(poll.failure, Some(LinkError::Exception(6)));
        assert_eq!(poll.requests(), 1);
        assert_eq!(sim.requests().len() - before, 3);
        assert_eq!(values(&poll), []);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_read_is_not_repeated_in_the_same_poll() {
    bounded(async {
        let sim = still_sim();
        // Unit 3 answers, but after twice the timeout.
        sim.set_faults(&[Fault::delay(TIMEOUT * 2).unit(3)]);
        let mut link = tcp_link(&sim, TIMEOUT);
        let mut planners = vec![planner(&[0])];
        let poll = poll_unit(&mut link, 3, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, Some(LinkError::Timeout(TIMEOUT)));
        assert_eq!(poll.requests(), 1, "retries are for fast failures only");
        assert_eq!(values(&poll), []);
        // Another unit on the same link is answered right after (a new connection).
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(values(&poll), [(0, 1.0)]);
        let units: Vec<u8> = sim.requests().iter().map(|r| r.unit).collect();
        assert_eq!(units, [3, 1]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_unit_costs_one_timeout_and_the_rest_of_its_reads_are_skipped() {
    bounded(async {
        let sim = still_sim();
        sim.set_faults(&[Fault::silent().unit(2)]);
        let mut link = tcp_link(&sim, TIMEOUT);
        // Far apart: three reads.
        let mut planners = vec![planner(&[0, 100, 1000])];
        let poll = poll_unit(&mut link, 2, &mut planners, &[0], DOWN).await;
        assert_eq!(poll.failure, Some(LinkError::Timeout(TIMEOUT)));
        assert_eq!(poll.requests(), 1);
        let skipped = poll
            .reads
            .iter()
            .filter(|r| r.outcome == Outcome::Skipped)
            .count();
        assert_eq!(skipped, 2);
        assert_eq!(sim.requests().len(), 1);

        // The probe tries every read.
        let policy = Policy {
            attempts: 1,
            stop_on_failure: false,
        };
        let poll = poll_unit(&mut link, 2, &mut planners, &[0], policy).await;
        assert_eq!(poll.requests(), 3);
        assert!(
            poll.reads
                .iter()
                .all(|r| matches!(r.outcome, Outcome::Failed(LinkError::Timeout(_))))
        );
        assert_eq!(sim.requests().len(), 4);
    })
    .await;
}
