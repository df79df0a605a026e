//! What each simulated field looks like: its normal profile (base levels, drift, noise) and
//! how far a fault pushes it. The numbers are chosen against the demo rules; the module doc of
//! `source::sim` lists them with the bounds they guarantee, and the tests hold them to it.

/// Temperature added by a spike or a step (and reached at the end of a drift). The lowest
/// normal temperature is 36.2 °C, so every faulted temperature is above 100 °C.
pub const TEMPERATURE_FAULT_OFFSET_C: f64 = 65.0;
/// Pressure added by a spike or a step (and reached at the end of a drift).
pub const PRESSURE_FAULT_OFFSET_BAR: f64 = 2.5;
/// Factor applied to vibration by a spike or a step (and reached at the end of a drift).
pub const VIBRATION_FAULT_FACTOR: f64 = 6.0;

/// Noise is a gaussian cut at this many standard deviations, which is what makes the normal
/// ranges in the module doc hard bounds rather than likely ones.
pub(super) const NOISE_CUTOFF_SIGMAS: f64 = 4.0;

/// One measured quantity of a simulated sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// °C.
    Temperature,
    /// bar.
    Pressure,
    /// mm/s RMS, never negative.
    Vibration,
}

/// The normal behaviour of a field: `base + amplitude·sin(2πt/period + phase) + walk + noise`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Profile {
    /// Range the per-sensor base level is drawn from.
    pub base: (f64, f64),
    /// Amplitude of the slow sinusoid; its period is drawn per series from `DRIFT_PERIOD_SECS`.
    pub drift_amplitude: f64,
    /// Bound of the random walk, which reflects at `±walk_bound`.
    pub walk_bound: f64,
    /// Standard deviation of the noise of each reading.
    pub noise_sigma: f64,
    /// Lowest value the field can take (physical floor).
    pub floor: f64,
}

/// Range of the drift period of each series: slow enough that rollups and z-scores see a
/// steady level, fast enough that the status page shows movement over an afternoon.
pub(super) const DRIFT_PERIOD_SECS: (f64, f64) = (3600.0, 4.0 * 3600.0);

/// Walk standard deviation per √second, relative to the walk bound: the walk crosses its
/// range in about an hour.
pub(super) const WALK_RATE: f64 = 0.02;

impl Field {
    /// In the order each sensor reports them.
    pub const ALL: [Field; 3] = [Field::Temperature, Field::Pressure, Field::Vibration];

    /// The field name on readings and series keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Temperature => "temperature",
            Field::Pressure => "pressure",
            Field::Vibration => "vibration",
        }
    }

    /// Position in [`Field::ALL`].
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn profile(self) -> Profile {
        match self {
            Field::Temperature => Profile {
                base: (40.0, 75.0),
                drift_amplitude: 2.0,
                walk_bound: 1.0,
                noise_sigma: 0.2,
                floor: f64::NEG_INFINITY,
            },
            Field::Pressure => Profile {
                base: (2.0, 6.0),
                drift_amplitude: 0.1,
                walk_bound: 0.05,
                noise_sigma: 0.02,
                floor: f64::NEG_INFINITY,
            },
            Field::Vibration => Profile {
                base: (0.3, 1.0),
                drift_amplitude: 0.05,
                walk_bound: 0.03,
                noise_sigma: 0.03,
                floor: 0.0,
            },
        }
    }

    /// The value of a faulted reading, given the normal one and the fault's strength: 1 for a
    /// spike or a step, rising from 0 to 1 over a drift.
    pub(super) fn with_fault(self, normal: f64, strength: f64) -> f64 {
        match self {
            Field::Temperature => normal + TEMPERATURE_FAULT_OFFSET_C * strength,
            Field::Pressure => normal + PRESSURE_FAULT_OFFSET_BAR * strength,
            Field::Vibration => normal * (1.0 + (VIBRATION_FAULT_FACTOR - 1.0) * strength),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest and highest value normal operation can produce: every term is bounded (the
    /// noise is cut, the walk reflects), so these are hard limits.
    fn normal_range(p: Profile) -> (f64, f64) {
        let swing = p.drift_amplitude + p.walk_bound + NOISE_CUTOFF_SIGMAS * p.noise_sigma;
        ((p.base.0 - swing).max(p.floor), p.base.1 + swing)
    }

    #[test]
    fn normal_temperature_bounds_leave_room_below_85_and_faults_cross_100() {
        let (low, high) = normal_range(Field::Temperature.profile());
        assert!(high < 85.0, "highest normal temperature {high}");
        assert!(
            Field::Temperature.with_fault(low, 1.0) > 100.0,
            "lowest faulted temperature {}",
            Field::Temperature.with_fault(low, 1.0)
        );
    }

    #[test]
    fn normal_vibration_cannot_reach_zero() {
        let (low, _) = normal_range(Field::Vibration.profile());
        assert!(low > 0.0, "lowest normal vibration {low}");
    }

    #[test]
    fn field_indices_match_their_position_in_all() {
        for (i, f) in Field::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }
}
