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
    // Orders are about multi-register values; a u16 or i16 is read as the device sends it.
    let order = if width == 1 { WordOrder::Abcd } else { order };
    let b = to_big_endian(order, regs);
    let value = match data_type {
        DataType::Bool => return Err(DecodeError::BadType("bool")),
        DataType::Bit(_) => unreachable!("handled above"),
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f32_as_written(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::U64 => u64::from_be_bytes(eight(&b)) as f64,
        DataType::I64 => i64::from_be_bytes(eight(&b)) as f64,
        DataType::F64 => f64::from_be_bytes(eight(&b)),
    };
    Ok(value)
}

/// An f32 as the f64 of its shortest decimal form: a device's -273.15f32 is stored and shown as
/// -273.15, not as -273.1499938964844 (`f64::from`). Converting back to f32 gives the same
/// bits, so nothing is lost.
fn f32_as_written(f: f32) -> f64 {
    if !f.is_finite() {
        return f64::from(f);
    }
    // Formatted on the stack: this runs for every f32 point of every poll.
    let mut buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    if std::io::Write::write_fmt(&mut cursor, format_args!("{f}")).is_err() {
        return f64::from(f);
    }
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(f64::from(f))
}

fn eight(b: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&b[..8]);
    out
}

/// The registers (wire order) that hold `raw` as `data_type` in `order` (ignored for
/// single-register types, like [`decode_raw`] does); `raw` is converted with `as` (saturating
/// for integers). For `Bit(n)` the register has only bit `n` set when
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
    let order = if data_type.width() == 1 {
        WordOrder::Abcd
    } else {
        order
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
    use proptest::prelude::*;

    #[test]
    fn orders_generalise_to_64_bits() {
        let v = 0x0102_0304_0506_0708u64;
        let regs = |order| from_big_endian(order, &v.to_be_bytes());
        assert_eq!(regs(WordOrder::Abcd), [0x0102, 0x0304, 0x0506, 0x0708]);
        assert_eq!(regs(WordOrder::Cdab), [0x0708, 0x0506, 0x0304, 0x0102]);
        assert_eq!(regs(WordOrder::Badc), [0x0201, 0x0403, 0x0605, 0x0807]);
        assert_eq!(regs(WordOrder::Dcba), [0x0807, 0x0605, 0x0403, 0x0201]);
        for order in WordOrder::ALL {
            assert_eq!(
                decode_raw(DataType::U64, order, &regs(order)).unwrap(),
                v as f64
            );
        }
    }

    #[test]
    fn single_register_types_ignore_the_order() {
        for order in WordOrder::ALL {
            assert_eq!(
                decode_raw(DataType::U16, order, &[0xfffe]).unwrap(),
                65534.0
            );
            assert_eq!(decode_raw(DataType::I16, order, &[0xfffe]).unwrap(), -2.0);
        }
    }

    #[test]
    fn known_values_of_every_type() {
        let abcd = |t, regs: &[u16]| decode_raw(t, WordOrder::Abcd, regs).unwrap();
        assert_eq!(abcd(DataType::I32, &[0xffff, 0xfffe]), -2.0);
        assert_eq!(abcd(DataType::U32, &[0xffff, 0xfffe]), 4_294_967_294.0);
        assert_eq!(
            abcd(DataType::F32, &[0x3F9D, 0x70A4]),
            1.23,
            "an f32 is its shortest decimal form"
        );
        assert_eq!(abcd(DataType::F32, &[0xC388, 0x9333]), -273.15);
        assert_eq!(abcd(DataType::I64, &[0xffff; 4]), -1.0);
        assert_eq!(
            abcd(DataType::F64, &[0x4009, 0x21fb, 0x5444, 0x2d18]),
            std::f64::consts::PI
        );
        assert_eq!(
            decode_raw(DataType::Bool, WordOrder::Abcd, &[1]),
            Err(DecodeError::BadType("bool"))
        );
        assert_eq!(
            decode_raw(DataType::Bit(16), WordOrder::Abcd, &[1]),
            Err(DecodeError::BadType("bit"))
        );
    }

    #[test]
    fn coils_decode_to_zero_and_one() {
        let p = PointSpec::new("run", Table::Coil, 17, DataType::Bool);
        let data = ReadData::Bits(vec![false, true, false]);
        assert_eq!(decode_point(&p, &data, 16).unwrap(), 1.0);
        assert_eq!(decode_point(&p, &data, 17).unwrap(), 0.0);
        assert!(decode_point(&p, &data, 10).is_err());
    }

    fn order() -> impl Strategy<Value = WordOrder> {
        prop::sample::select(WordOrder::ALL.to_vec())
    }

    /// Encodes `raw` as `t` in `order`, decodes it back through a point at `address` in a
    /// read starting `lead` registers earlier, with scale 1 and offset 0.
    fn round_trip(t: DataType, order: WordOrder, raw: f64, lead: u16) -> f64 {
        let mut regs = vec![0xdead; usize::from(lead)];
        regs.extend(encode_raw(t, order, raw));
        regs.push(0xbeef);
        let mut p = PointSpec::new("x", Table::Holding, 100 + lead, t);
        p.order = order;
        decode_point(&p, &ReadData::Registers(regs), 100).unwrap()
    }

    proptest! {
        #[test]
        fn every_integer_type_and_order_round_trips(
            order in order(),
            lead in 0u16..4,
            x in any::<u64>(),
        ) {
            let cases = [
                (DataType::U16, f64::from(x as u16)),
                (DataType::I16, f64::from(x as i16)),
                (DataType::U32, f64::from(x as u32)),
                (DataType::I32, f64::from(x as i32)),
                (DataType::U64, x as f64),
                (DataType::I64, x as i64 as f64),
            ];
            for (t, v) in cases {
                prop_assert_eq!(round_trip(t, order, v, lead), v, "{:?} {:?}", t, order);
            }
        }

        #[test]
        fn every_float_type_and_order_round_trips_bit_for_bit(
            order in order(),
            lead in 0u16..4,
            bits32 in any::<u32>(),
            bits64 in any::<u64>(),
        ) {
            let f = f32::from_bits(bits32);
            let got = round_trip(DataType::F32, order, f64::from(f), lead);
            prop_assert!((got as f32).to_bits() == f.to_bits() || (f.is_nan() && got.is_nan()));
            let d = f64::from_bits(bits64);
            let got = round_trip(DataType::F64, order, d, lead);
            prop_assert!(got.to_bits() == d.to_bits() || (d.is_nan() && got.is_nan()));
        }

        #[test]
        fn bit_n_reads_exactly_that_bit(reg in any::<u16>(), n in 0u8..16) {
            let v = decode_raw(DataType::Bit(n), WordOrder::Abcd, &[reg]).unwrap();
            prop_assert_eq!(v, f64::from((reg >> n) & 1));
            let one = encode_raw(DataType::Bit(n), WordOrder::Abcd, 1.0);
            prop_assert_eq!(decode_raw(DataType::Bit(n), WordOrder::Abcd, &one).unwrap(), 1.0);
        }

        #[test]
        fn byte_orders_are_permutations_that_invert(
            order in order(),
            regs in prop::collection::vec(any::<u16>(), 1..6),
        ) {
            let bytes = to_big_endian(order, &regs);
            prop_assert_eq!(from_big_endian(order, &bytes), regs.clone());
            let mut sorted = bytes.clone();
            sorted.sort_unstable();
            let mut plain = to_big_endian(WordOrder::Abcd, &regs);
            plain.sort_unstable();
            prop_assert_eq!(sorted, plain);
        }

        #[test]
        fn scale_and_offset_are_applied_after_decoding(
            raw in any::<i16>(),
            scale in -1000.0f64..1000.0,
            offset in -1000.0f64..1000.0,
        ) {
            let mut p = PointSpec::new("x", Table::Input, 0, DataType::I16);
            p.scale = scale;
            p.offset = offset;
            let v = decode_point(&p, &ReadData::Registers(vec![raw as u16]), 0).unwrap();
            prop_assert_eq!(v, f64::from(raw) * scale + offset);
        }

        #[test]
        fn decoding_arbitrary_data_never_panics(
            t in prop::sample::select(DataType::ALL.to_vec()),
            order in order(),
            address in any::<u16>(),
            start in any::<u16>(),
            regs in prop::collection::vec(any::<u16>(), 0..8),
            bits in prop::option::of(prop::collection::vec(any::<bool>(), 0..8)),
        ) {
            let mut p = PointSpec::new("x", Table::Holding, address, t);
            p.order = order;
            let data = match bits {
                Some(b) => ReadData::Bits(b),
                None => ReadData::Registers(regs),
            };
            let _ = decode_point(&p, &data, start);
        }
    }

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
