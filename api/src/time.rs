//! [`Time`]: a `timestamptz` read from the database and written in JSON as
//! RFC 3339 (UTC).

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{Decode, Postgres, Type};
use store::Stamp;

/// An instant in an answer: RFC 3339 in UTC, to the microsecond stored.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[schema(value_type = String, format = DateTime)]
pub struct Time(pub jiff::Timestamp);

impl Type<Postgres> for Time {
    fn type_info() -> PgTypeInfo {
        <Stamp as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for Time {
    fn decode(value: PgValueRef<'r>) -> Result<Time, BoxDynError> {
        Ok(Time(<Stamp as Decode<Postgres>>::decode(value)?.to_jiff()))
    }
}
