//! Time at the database edge. In memory emtrack keeps milliseconds since the
//! Unix epoch (the alert core and the engine's ids take them); in
//! PostgreSQL, `timestamptz`. [`Millis`] is the one conversion between the
//! two, in both directions and for arrays: typed and read by way of
//! `jiff-sqlx`, written with jiff's instant arithmetic.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

/// An instant stored as `timestamptz`, to the microsecond (for columns set
/// by `now()`, where milliseconds would merge distinct commits).
pub type Stamp = jiff_sqlx::Timestamp;

/// Milliseconds since the Unix epoch, bound and read as `timestamptz`.
/// Encoding a value outside jiff's range (years −9999 to 9999) is an error,
/// never a clamp. Reading truncates microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Type<Postgres> for Millis {
    fn type_info() -> PgTypeInfo {
        <Stamp as Type<Postgres>>::type_info()
    }
}

impl PgHasArrayType for Millis {
    fn array_type_info() -> PgTypeInfo {
        <Stamp as PgHasArrayType>::array_type_info()
    }
}

/// PostgreSQL's epoch: `timestamptz` travels as microseconds since
/// 2000-01-01T00:00:00Z (an `int8`), the format `jiff-sqlx` reads.
const POSTGRES_EPOCH: jiff::Timestamp = jiff::Timestamp::constant(946_684_800, 0);

impl Encode<'_, Postgres> for Millis {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        // Instant arithmetic, no calendar: `jiff-sqlx`'s own encoder goes
        // through a civil date-time, which costs 2 % of ingest's CPU per fix
        // (benches/ingest-instructions.sh); its decoder is used as it is.
        let t = jiff::Timestamp::from_millisecond(self.0)?;
        let micros = i64::try_from(t.duration_since(POSTGRES_EPOCH).as_micros())?;
        <i64 as Encode<Postgres>>::encode(micros, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Millis {
    fn decode(value: PgValueRef<'r>) -> Result<Millis, BoxDynError> {
        let t = <Stamp as Decode<Postgres>>::decode(value)?;
        Ok(Millis(t.to_jiff().as_millisecond()))
    }
}

impl From<Millis> for i64 {
    fn from(m: Millis) -> i64 {
        m.0
    }
}

/// The wall clock, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `Millis` writes is what `jiff-sqlx` (and so PostgreSQL) reads
    /// back, to the millisecond, across the range a device may claim.
    #[test]
    fn written_times_read_back_through_jiff_sqlx() {
        for ms in [
            0,
            -1,
            946_684_800_000,
            946_684_799_999,
            1_764_590_000_123,
            jiff::Timestamp::MIN.as_second() * 1000,
            jiff::Timestamp::MAX.as_second() * 1000,
        ] {
            let mut buf = PgArgumentBuffer::default();
            let r = Millis(ms).encode_by_ref(&mut buf);
            assert!(matches!(r, Ok(IsNull::No)), "{ms}: {:?}", r.err());
            let micros = i64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
            let back = POSTGRES_EPOCH
                .checked_add(jiff::SignedDuration::from_micros(micros))
                .expect("in range");
            assert_eq!(back.as_millisecond(), ms, "{ms}");
        }
        assert!(
            Millis(i64::MAX)
                .encode_by_ref(&mut PgArgumentBuffer::default())
                .is_err()
        );
    }
}
