//! Registers and bits → values (pure). A point's registers are first put into big-endian byte
//! order according to its [`WordOrder`], then read as its [`DataType`], then scaled:
//! `value = raw * scale + offset` (the arithmetic is skipped for scale 1 and offset 0, so raw
//! integers up to 2^53 come out exact).
//!
//! [`encode_raw`] is the inverse, for tests, fuzzing and simulators.

use super::{DataType, PointSpec, ReadData, WordOrder};

/// Why an answer could not be decoded. The scheduler treats any of these like a protocol error
/// (the answer does not match the request), not as a bad point.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Registers answered a bit read, or bits a register read.
    #[error("expected {expected}, got {got}")]
    WrongKind {
        expected: &'static str,
        got: &'static str,
    },
    /// The answer holds fewer registers or bits than the point needs.
    #[error("answer too short: needs {needed} {unit}, got {got}")]
    TooShort {
        needed: usize,
        got: usize,
        unit: &'static str,
    },
    /// A point outside the read (a caller bug: reads carry their points).
    #[error("point at address {address} is outside the read starting at {start}")]
    OutsideRead { address: u16, start: u16 },
    /// `bit` greater than 15, or a type that does not fit the table.
    #[error("type {0} cannot be decoded from this table")]
    BadType(&'static str),
}

/// The big-endian bytes of `regs` (registers as they came off the wire) in `order`.
pub fn to_big_endian(order: WordOrder, regs: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(regs.len() * 2);
    match order {
        WordOrder::Abcd => regs.iter().for_each(|r| out.extend(r.to_be_bytes())),
        WordOrder::Cdab => regs.iter().rev().for_each(|r| out.extend(r.to_be_bytes())),
        WordOrder::Badc => regs.iter().for_each(|r| out.extend(r.to_le_bytes())),
        WordOrder::Dcba => regs.iter().rev().for_each(|r| out.extend(r.to_le_bytes())),
    }
    out
}

/// The registers (wire order) that carry the big-endian `bytes` in `order`; the inverse of
/// [`to_big_endian`]. `bytes` has an even length.
pub fn from_big_endian(order: WordOrder, bytes: &[u8]) -> Vec<u16> {
    let words = bytes.chunks_exact(2);
    let mut regs: Vec<u16> = match order {
        WordOrder::Abcd | WordOrder::Cdab => {
            words.map(|w| u16::from_be_bytes([w[0], w[1]])).collect()
        }
        WordOrder::Badc | WordOrder::Dcba => {
            words.map(|w| u16::from_le_bytes([w[0], w[1]])).collect()
        }
    };
    if matches!(order, WordOrder::Cdab | WordOrder::Dcba) {
        regs.reverse();
    }
    regs
}

/// The raw (unscaled) value of `data_type` from exactly its registers. `Bool` is not a
/// register type and is refused.
pub fn decode_raw(data_type: DataType, order: WordOrder, regs: &[u16]) -> Result<f64, DecodeError> {
    let width = usize::from(data_type.width());
    if regs.len() < width {
        return Err(DecodeError::TooShort {
            needed: width,
            got: regs.len(),
            unit: "registers",
        });
    }
    let regs = &regs[..width];
    if let DataType::Bit(n) = data_type {
        if n > 15 {
            return Err(DecodeError::BadType("bit"));
        }
        return Ok(f64::from((regs[0] >> n) & 1));
    }
    let b = to_big_endian(order, regs);
    let value = match data_type {
        DataType::Bool => return Err(DecodeError::BadType("bool")),
        DataType::Bit(_) => unreachable!("handled above"),
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::U64 => u64::from_be_bytes(eight(&b)) as f64,
        DataType::I64 => i64::from_be_bytes(eight(&b)) as f64,
        DataType::F64 => f64::from_be_bytes(eight(&b)),
    };
    Ok(value)
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// The registers (wire order) that hold `raw` as `data_type` in `order`; `raw` is converted
/// with `as` (saturating for integers). For `Bit(n)` the register has only bit `n` set when
/// `raw` is non-zero. `Bool` gives one register 0 or 1.
pub fn encode_raw(data_type: DataType, order: WordOrder, raw: f64) -> Vec<u16> {
    let bytes: Vec<u8> = match data_type {
        DataType::Bool => return vec![u16::from(raw != 0.0)],
        DataType::Bit(n) => return vec![if raw != 0.0 { 1u16 << (n & 15) } else { 0 }],
        DataType::U16 => (raw as u16).to_be_bytes().to_vec(),
        DataType::I16 => (raw as i16).to_be_bytes().to_vec(),
        DataType::U32 => (raw as u32).to_be_bytes().to_vec(),
        DataType::I32 => (raw as i32).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::U64 => (raw as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw as i64).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
    };
    from_big_endian(order, &bytes)
}

/// Applies the point's scale and offset to a raw value.
pub fn scaled(point: &PointSpec, raw: f64) -> f64 {
    if point.scale == 1.0 && point.offset == 0.0 {
        raw
    } else {
        raw * point.scale + point.offset
    }
}

/// The value of `point` from the data of a read that starts at address `start`.
pub fn decode_point(point: &PointSpec, data: &ReadData, start: u16) -> Result<f64, DecodeError> {
    let Some(at) = point.address.checked_sub(start).map(usize::from) else {
        return Err(DecodeError::OutsideRead {
            address: point.address,
            start,
        });
    };
    let width = usize::from(point.data_type.width());
    let raw = match (point.data_type, data) {
        (DataType::Bool, ReadData::Bits(bits)) => match bits.get(at) {
            Some(b) => f64::from(u8::from(*b)),
            None => {
                return Err(DecodeError::TooShort {
                    needed: at + 1,
                    got: bits.len(),
                    unit: "bits",
                });
            }
        },
        (DataType::Bool, ReadData::Registers(_)) => {
            return Err(DecodeError::WrongKind {
                expected: "bits",
                got: "registers",
            });
        }
        (_, ReadData::Bits(_)) => {
            return Err(DecodeError::WrongKind {
                expected: "registers",
                got: "bits",
            });
        }
        (t, ReadData::Registers(regs)) => {
            if regs.len() < at + width {
                return Err(DecodeError::TooShort {
                    needed: at + width,
                    got: regs.len(),
                    unit: "registers",
                });
            }
            decode_raw(t, point.order, &regs[at..at + width])?
        }
    };
    Ok(scaled(point, raw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::Table;

    #[test]
    fn orders_match_the_spec_for_32_bits() {
        // 0x11223344 = A B C D.
        let v = f64::from(0x1122_3344u32);
        assert_eq!(
            encode_raw(DataType::U32, WordOrder::Abcd, v),
            [0x1122, 0x3344]
        );
        assert_eq!(
            encode_raw(DataType::U32, WordOrder::Cdab, v),
            [0x3344, 0x1122]
        );
        assert_eq!(
            encode_raw(DataType::U32, WordOrder::Badc, v),
            [0x2211, 0x4433]
        );
        assert_eq!(
            encode_raw(DataType::U32, WordOrder::Dcba, v),
            [0x4433, 0x2211]
        );
    }

    #[test]
    fn bit_n_of_a_register() {
        let regs = [0x8025u16];
        let bits: Vec<f64> = (0..16)
            .map(|n| decode_raw(DataType::Bit(n), WordOrder::Abcd, &regs).unwrap())
            .collect();
        assert_eq!(bits[0], 1.0);
        assert_eq!(bits[1], 0.0);
        assert_eq!(bits[2], 1.0);
        assert_eq!(bits[5], 1.0);
        assert_eq!(bits[15], 1.0);
        assert_eq!(bits.iter().sum::<f64>(), 4.0);
    }

    #[test]
    fn scale_and_offset_apply_to_the_raw_value() {
        let mut p = PointSpec::new("t", Table::Holding, 10, DataType::I16);
        p.scale = 0.1;
        p.offset = -40.0;
        let data = ReadData::Registers(vec![0, 0, (-100i16) as u16]);
        let v = decode_point(&p, &data, 8).unwrap();
        assert!((v - (-50.0)).abs() < 1e-9, "{v}");
    }

    #[test]
    fn short_or_mismatched_answers_are_errors() {
        let p = PointSpec::new("t", Table::Holding, 1, DataType::F32);
        assert!(matches!(
            decode_point(&p, &ReadData::Registers(vec![1, 2]), 0),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            decode_point(&p, &ReadData::Bits(vec![true; 4]), 0),
            Err(DecodeError::WrongKind { .. })
        ));
        assert!(matches!(
            decode_point(&p, &ReadData::Registers(vec![1, 2, 3]), 2),
            Err(DecodeError::OutsideRead { .. })
        ));
    }
}
