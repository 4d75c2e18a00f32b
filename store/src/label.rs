//! Text columns that hold one of a closed set of labels (kinds, states,
//! severities, channels). Each type knows its labels (`as_str`,
//! `from_name`); reading one back goes through [`label`], so that a value
//! this build does not know is an error naming the column and the value,
//! never a silent default.

use std::fmt;

/// A stored label this build does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownLabel {
    /// `table.column`.
    pub column: &'static str,
    /// The value found.
    pub value: String,
}

impl fmt::Display for UnknownLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} holds {:?}, which this emtrack does not know: a newer version wrote it, \
             or the row was changed by hand",
            self.column, self.value
        )
    }
}

impl std::error::Error for UnknownLabel {}

impl From<UnknownLabel> for sqlx::Error {
    fn from(e: UnknownLabel) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: e.column.to_owned(),
            source: Box::new(e),
        }
    }
}

/// Parses the label `value` of `column` with the type's `from_name`.
pub fn label<T>(
    column: &'static str,
    value: &str,
    from_name: impl FnOnce(&str) -> Option<T>,
) -> Result<T, UnknownLabel> {
    from_name(value).ok_or_else(|| UnknownLabel {
        column,
        value: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_label_names_its_column_and_value() {
        let from_name = |s: &str| (s == "open").then_some(1);
        assert_eq!(label("alerts.state", "open", from_name), Ok(1));
        let e = label("alerts.state", "snoozed", from_name).expect_err("unknown");
        assert!(
            e.to_string().contains("alerts.state holds \"snoozed\""),
            "{e}"
        );
        let sql: sqlx::Error = e.into();
        assert!(sql.to_string().contains("snoozed"), "{sql}");
    }
}
