//! Scoring a replay against labels the way SKAB's leaderboard does (sans-IO): the first
//! `warmup` rows of a file are not scored; every later row with a label compares the 0/1
//! alarm with it; counts add up over files. Plus what a person tuning rules wants next to the
//! counts: the events raised and how long each labelled episode took to be noticed.

use crate::model::{NS_PER_SEC, TimeNs};

/// Point-wise confusion counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl Confusion {
    pub fn add(&mut self, alarm: bool, label: bool) {
        match (alarm, label) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, true) => self.fn_ += 1,
            (false, false) => self.tn += 1,
        }
    }

    pub fn merge(&mut self, other: &Confusion) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
        self.tn += other.tn;
    }

    pub fn rows(&self) -> u64 {
        self.tp + self.fp + self.fn_ + self.tn
    }

    /// TP / (TP + FP); `None` without any alarm.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// TP / (TP + FN); `None` without any anomalous row.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// 2TP / (2TP + FP + FN), as SKAB computes it; `None` when all three are zero.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    /// False-alarm rate FP / (FP + TN); `None` without any normal row.
    pub fn far(&self) -> Option<f64> {
        ratio(self.fp, self.fp + self.tn)
    }

    /// Missed-alarm rate FN / (FN + TP); `None` without any anomalous row.
    pub fn mar(&self) -> Option<f64> {
        ratio(self.fn_, self.fn_ + self.tp)
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// One labelled episode (a run of anomalous rows in the scored part) and its detection.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Row index (0-based, data rows) and time of the episode's first row.
    pub start_row: usize,
    pub start: TimeNs,
    pub rows: usize,
    /// The first alarmed row inside the episode, if any: (row index, time).
    pub detected: Option<(usize, TimeNs)>,
}

impl Episode {
    /// Rows from the episode's start to its first alarm (0: alarmed on the first row).
    pub fn delay_rows(&self) -> Option<usize> {
        self.detected.map(|(row, _)| row - self.start_row)
    }

    /// Seconds from the episode's start to its first alarm.
    pub fn delay_secs(&self) -> Option<f64> {
        self.detected
            .map(|(_, t)| (t - self.start) as f64 / NS_PER_SEC as f64)
    }
}

/// The score of one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileScore {
    pub confusion: Confusion,
    /// Rows scored (after warm-up, with a label).
    pub scored_rows: u64,
    pub episodes: Vec<Episode>,
    /// Events raised at or after the first scored row.
    pub events: u64,
    /// Event time covered by the scored rows (first to last), in seconds.
    pub scored_secs: f64,
    /// Rows after the warm-up, labelled or not, and how many of them had the alarm on.
    pub rows_after_warmup: u64,
    pub alarmed_rows: u64,
}

impl FileScore {
    /// Share of the rows after warm-up with the alarm on; `None` without such rows.
    pub fn alarm_share(&self) -> Option<f64> {
        ratio(self.alarmed_rows, self.rows_after_warmup)
    }

    /// Events per hour of scored time; `None` for a span of zero.
    pub fn events_per_hour(&self) -> Option<f64> {
        (self.scored_secs > 0.0).then(|| self.events as f64 * 3_600.0 / self.scored_secs)
    }
}

/// Scores one file. `alarms`, `labels` and `times` are per row, in file order; rows before
/// `warmup` are not scored, nor are rows without a label. `raised` holds the raise time of
/// every event of the file.
pub fn score(
    alarms: &[bool],
    labels: &[Option<bool>],
    times: &[TimeNs],
    warmup: usize,
    raised: &[TimeNs],
) -> FileScore {
    let mut out = FileScore::default();
    let mut current: Option<Episode> = None;
    let mut first_scored: Option<TimeNs> = None;
    let mut last_scored: Option<TimeNs> = None;
    for (row, ((&alarm, label), &time)) in alarms.iter().zip(labels).zip(times).enumerate() {
        if row < warmup {
            continue;
        }
        first_scored.get_or_insert(time);
        last_scored = Some(time);
        out.rows_after_warmup += 1;
        out.alarmed_rows += u64::from(alarm);
        let Some(label) = *label else {
            if let Some(e) = current.take() {
                out.episodes.push(e);
            }
            continue;
        };
        out.scored_rows += 1;
        out.confusion.add(alarm, label);
        if label {
            let episode = current.get_or_insert(Episode {
                start_row: row,
                start: time,
                rows: 0,
                detected: None,
            });
            episode.rows += 1;
            if alarm && episode.detected.is_none() {
                episode.detected = Some((row, time));
            }
        } else if let Some(e) = current.take() {
            out.episodes.push(e);
        }
    }
    if let Some(e) = current.take() {
        out.episodes.push(e);
    }
    if let (Some(first), Some(last)) = (first_scored, last_scored) {
        out.scored_secs = (last - first) as f64 / NS_PER_SEC as f64;
        out.events = raised.iter().filter(|&&t| t >= first).count() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = NS_PER_SEC;

    #[test]
    fn counts_rates_and_delays_of_a_small_file() {
        // rows:     0  1  2  3  4  5  6  7  8  9
        // label:    0  0  0  1  1  1  0  0  1  1
        // alarm:    1  0  1  0  1  1  1  0  0  0
        // warm-up 2: rows 0 and 1 are not scored.
        let labels: Vec<Option<bool>> = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1]
            .iter()
            .map(|&l| Some(l == 1))
            .collect();
        let alarms = [
            true, false, true, false, true, true, true, false, false, false,
        ];
        let times: Vec<TimeNs> = (0..10).map(|i| 1_000 * S + i * S).collect();
        let score = score(
            &alarms,
            &labels,
            &times,
            2,
            &[1_000 * S, 1_002 * S, 1_004 * S],
        );
        let c = score.confusion;
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 2, 3, 1));
        assert_eq!(score.scored_rows, 8);
        assert_eq!(c.f1(), Some(4.0 / 9.0));
        assert_eq!(c.far(), Some(2.0 / 3.0));
        assert_eq!(c.mar(), Some(3.0 / 5.0));
        assert_eq!(c.precision(), Some(0.5));
        assert_eq!(c.recall(), Some(0.4));
        assert_eq!(score.episodes.len(), 2);
        assert_eq!(score.episodes[0].delay_rows(), Some(1));
        assert_eq!(score.episodes[0].delay_secs(), Some(1.0));
        assert_eq!(score.episodes[0].rows, 3);
        assert_eq!(score.episodes[1].detected, None);
        // The event raised during warm-up is not counted.
        assert_eq!(score.events, 2);
        assert_eq!(score.scored_secs, 7.0);
        assert_eq!(score.alarm_share(), Some(4.0 / 8.0));
        assert_eq!(score.events_per_hour(), Some(2.0 * 3_600.0 / 7.0));
    }

    #[test]
    fn rates_without_a_denominator_are_none() {
        let c = Confusion::default();
        assert_eq!(
            (c.f1(), c.far(), c.mar(), c.precision()),
            (None, None, None, None)
        );
        let mut c = Confusion::default();
        c.add(false, false);
        assert_eq!(c.far(), Some(0.0));
        assert_eq!(c.mar(), None);
    }

    #[test]
    fn unlabelled_rows_are_not_scored_and_end_an_episode() {
        let labels = [Some(true), None, Some(true)];
        let score = score(&[true, true, false], &labels, &[0, 1, 2], 0, &[]);
        assert_eq!(score.scored_rows, 2);
        assert_eq!(score.episodes.len(), 2);
        assert_eq!(score.confusion.tp, 1);
        assert_eq!(score.confusion.fn_, 1);
    }
}
