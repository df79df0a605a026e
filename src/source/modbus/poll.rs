//! One poll of one unit: the reads of its due poll groups, sent one at a time over the link,
//! with retries, splitting on exception 2, and decoding. Shared by the scheduler
//! ([`super::task`]) and `edgewatch probe --config` so that the probe shows exactly what the
//! daemon would read.

use std::collections::VecDeque;
use std::time::Duration;

use crate::modbus::{ILLEGAL_DATA_ADDRESS, Planner, Read, SplitOutcome};
use crate::model::{TimeNs, now_ns};

use super::link::{Link, LinkError};

/// How a poll treats failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Attempts per read (1 + retries while the unit is up, 1 while it is down).
    pub attempts: u32,
    /// Stop at the first read that fails for good (the scheduler: a dead unit costs the bus
    /// one timeout); `false` tries every read (the probe reports each).
    pub stop_on_failure: bool,
}

/// One request sent (or tried: a connect that failed counts too).
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Round trip, when the request went out (a timeout counts as the timeout).
    pub round_trip: Option<Duration>,
    pub error: Option<LinkError>,
}

/// What became of one read.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Decoded: (point index in the group's planner, value).
    Values(Vec<(usize, f64)>),
    /// Exception 2 on a read of several points: replaced by these reads, read next.
    Split(Vec<Read>),
    /// Exception 2 on a read of one point: the point is bad, polled again only rarely.
    Bad(usize),
    /// Failed for good (after every attempt).
    Failed(LinkError),
    /// Not sent: an earlier read failed and the policy stops at the first failure.
    Skipped,
}

/// One read of a poll and its outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadReport {
    /// Index of the poll group (and its planner).
    pub group: usize,
    pub read: Read,
    pub outcome: Outcome,
}

/// The result of polling one unit once.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitPoll {
    /// Gateway clock at the start of the poll: the time of every reading it produced.
    pub time: TimeNs,
    pub reads: Vec<ReadReport>,
    pub attempts: Vec<Attempt>,
    /// The first read failure that failed the poll; `None` when the unit answered every read
    /// (exceptions 2 included: the device is there, only an address is not).
    pub failure: Option<LinkError>,
}

impl UnitPoll {
    /// Requests sent (or tried) in this poll.
    pub fn requests(&self) -> usize {
        self.attempts.len()
    }

    /// Every decoded value: (group, point index, value).
    pub fn values(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        self.reads.iter().flat_map(|r| {
            let values: &[(usize, f64)] = match &r.outcome {
                Outcome::Values(v) => v,
                _ => &[],
            };
            values
                .iter()
                .map(move |&(point, value)| (r.group, point, value))
        })
    }

    /// Round trip of the last request that was answered in time.
    pub fn latency(&self) -> Option<Duration> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.error.as_ref().is_none_or(|e| e.exception().is_some()))
            .and_then(|a| a.round_trip)
    }
}

/// Polls the poll groups `due` (indexes into `planners`) of `unit` once. Each planner starts
/// a cycle (its reads plus any re-probe of bad points); reads go out one at a time in plan
/// order; a read refused with exception 2 is split by its planner and its halves read at once.
pub async fn poll_unit(
    link: &mut Link,
    unit: u8,
    planners: &mut [Planner],
    due: &[usize],
    policy: Policy,
) -> UnitPoll {
    let mut poll = UnitPoll {
        time: now_ns(),
        reads: Vec::new(),
        attempts: Vec::new(),
        failure: None,
    };
    for &group in due {
        let Some(planner) = planners.get_mut(group) else {
            continue;
        };
        let mut queue: VecDeque<Read> = planner.cycle().into();
        while let Some(read) = queue.pop_front() {
            if poll.failure.is_some() && policy.stop_on_failure {
                poll.reads.push(ReadReport {
                    group,
                    read,
                    outcome: Outcome::Skipped,
                });
                continue;
            }
            let outcome = read_once(link, unit, planner, &read, policy, &mut poll.attempts).await;
            match &outcome {
                Outcome::Split(halves) => {
                    for half in halves.iter().rev() {
                        queue.push_front(half.clone());
                    }
                }
                // An exception 2 outside the plan (cannot happen with a planner's own reads)
                // is an answer of the device: it does not fail the unit.
                Outcome::Failed(e)
                    if poll.failure.is_none() && e.exception() != Some(ILLEGAL_DATA_ADDRESS) =>
                {
                    poll.failure = Some(e.clone())
                }
                _ => {}
            }
            poll.reads.push(ReadReport {
                group,
                read,
                outcome,
            });
        }
    }
    poll
}

/// One read with its attempts.
async fn read_once(
    link: &mut Link,
    unit: u8,
    planner: &mut Planner,
    read: &Read,
    policy: Policy,
    attempts: &mut Vec<Attempt>,
) -> Outcome {
    let mut tries = 0;
    loop {
        tries += 1;
        let answer = link.read(unit, read.table, read.address, read.count).await;
        let round_trip = link.last_round_trip();
        let error = match answer {
            Ok(data) => match planner.decode(read, &data) {
                Ok(values) => {
                    // `decode` returns the values of `read.points`, in that order.
                    let values = read
                        .points
                        .iter()
                        .zip(values)
                        .map(|(&i, (_, value))| (i, value))
                        .collect();
                    attempts.push(Attempt {
                        round_trip,
                        error: None,
                    });
                    planner.succeeded(read);
                    return Outcome::Values(values);
                }
                // The answer does not fit the request: the link is not to be trusted.
                Err(e) => {
                    link.close();
                    LinkError::Decode(e.to_string())
                }
            },
            Err(e) => e,
        };
        attempts.push(Attempt {
            round_trip,
            error: Some(error.clone()),
        });
        if error.exception() == Some(ILLEGAL_DATA_ADDRESS) {
            return match planner.split(read) {
                SplitOutcome::Split(halves) => Outcome::Split(halves),
                SplitOutcome::Bad(point) => Outcome::Bad(point),
                SplitOutcome::NotPlanned => Outcome::Failed(error),
            };
        }
        if tries >= policy.attempts.max(1) {
            return Outcome::Failed(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeServer, Reply, Request, identity};
    use super::super::link::Endpoint;
    use super::*;
    use crate::modbus::{DataType, Limits, PointSpec, Table};

    fn link(port: u16) -> Link {
        Link::new(
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port,
            },
            Duration::from_millis(100),
        )
    }

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

    fn values(poll: &UnitPoll) -> Vec<(usize, f64)> {
        poll.values().map(|(_, p, v)| (p, v)).collect()
    }

    #[tokio::test]
    async fn exception_2_splits_the_read_until_the_bad_point_is_isolated() {
        // Address 5 does not exist; 0, 1 and 10 do. The planner merges all four points.
        let server = FakeServer::start(|r: Request| {
            if (r.address..r.address + r.count).contains(&5) {
                Reply::Exception(2)
            } else {
                Reply::Registers(identity(r))
            }
        })
        .await;
        let mut link = link(server.port);
        let mut planners = vec![planner(&[0, 1, 5, 10])];
        assert_eq!(planners[0].reads().len(), 1);
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, None, "exception 2 does not fail the unit");
        assert_eq!(values(&poll), [(0, 0.0), (1, 1.0), (3, 10.0)]);
        assert!(
            poll.reads
                .iter()
                .any(|r| matches!(r.outcome, Outcome::Bad(2))),
            "{:?}",
            poll.reads
        );
        assert_eq!(planners[0].bad_points()[0].name, "p5");
        // The next poll uses the adapted plan: no exception any more.
        let before = server.requests().len();
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(values(&poll), [(0, 0.0), (1, 1.0), (3, 10.0)]);
        assert!(poll.attempts.iter().all(|a| a.error.is_none()));
        assert_eq!(server.requests().len() - before, poll.requests());
        assert!(poll.requests() <= 2, "{:?}", poll.reads);
    }

    #[tokio::test]
    async fn a_failed_request_is_retried_while_the_policy_allows() {
        let n = std::sync::atomic::AtomicUsize::new(0);
        let server = FakeServer::start(move |r: Request| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                .is_multiple_of(2)
            {
                Reply::Exception(6)
            } else {
                Reply::Registers(identity(r))
            }
        })
        .await;
        let mut link = link(server.port);
        let mut planners = vec![planner(&[3])];
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], UP).await;
        assert_eq!(poll.failure, None);
        assert_eq!(poll.requests(), 2);
        assert_eq!(
            poll.attempts[0].error,
            Some(LinkError::Exception(6)),
            "server device busy, then the answer"
        );
        assert_eq!(values(&poll), [(0, 3.0)]);

        let down = Policy {
            attempts: 1,
            stop_on_failure: true,
        };
        let poll = poll_unit(&mut link, 1, &mut planners, &[0], down).await;
        assert_eq!(poll.failure, Some(LinkError::Exception(6)));
        assert_eq!(poll.requests(), 1);
        assert_eq!(values(&poll), []);
    }

    #[tokio::test]
    async fn a_silent_unit_costs_one_timeout_and_the_rest_of_its_reads_are_skipped() {
        let server = FakeServer::start(|_| Reply::Silent).await;
        let mut link = link(server.port);
        // Far apart: three reads.
        let mut planners = vec![planner(&[0, 500, 1000])];
        let policy = Policy {
            attempts: 1,
            stop_on_failure: true,
        };
        let poll = poll_unit(&mut link, 4, &mut planners, &[0], policy).await;
        assert_eq!(
            poll.failure,
            Some(LinkError::Timeout(Duration::from_millis(100)))
        );
        assert_eq!(poll.requests(), 1);
        let skipped = poll
            .reads
            .iter()
            .filter(|r| r.outcome == Outcome::Skipped)
            .count();
        assert_eq!(skipped, 2);

        // The probe tries every read.
        let policy = Policy {
            attempts: 1,
            stop_on_failure: false,
        };
        let poll = poll_unit(&mut link, 4, &mut planners, &[0], policy).await;
        assert_eq!(poll.requests(), 3);
        assert!(
            poll.reads
                .iter()
                .all(|r| matches!(r.outcome, Outcome::Failed(LinkError::Timeout(_))))
        );
    }
}
