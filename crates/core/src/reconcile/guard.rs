//! Refuses runs that would delete a suspicious share of a mailbox's items.

/// A run refused because it would delete too much.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "refused: this run would delete {deletes} of {linked} linked items, more than the allowed share of {max_share}; \
     check the mailbox and the CRM for an outage or a mass change, then resync or raise the limit"
)]
pub struct MassDeleteRefused {
    pub linked: usize,
    pub deletes: usize,
    pub max_share: f64,
}

/// Refuses a run that would delete more than `max_share` (0.0..=1.0) of a mailbox's `linked` items.
/// No delete is always fine; deletes with nothing linked are refused; `max_share` outside
/// 0.0..=1.0 is clamped (NaN reads as 0.0).
pub fn mass_delete_guard(
    linked: usize,
    deletes: usize,
    max_share: f64,
) -> Result<(), MassDeleteRefused> {
    if deletes == 0 {
        return Ok(());
    }
    let share = if max_share.is_nan() {
        0.0
    } else {
        max_share.clamp(0.0, 1.0)
    };
    if linked == 0 || deletes as f64 > share * linked as f64 {
        return Err(MassDeleteRefused {
            linked,
            deletes,
            max_share: share,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_delete_guard_allows_up_to_the_share() {
        assert!(mass_delete_guard(100, 0, 0.0).is_ok());
        assert!(mass_delete_guard(100, 10, 0.1).is_ok());
        assert!(mass_delete_guard(100, 100, 1.0).is_ok());
    }

    #[test]
    fn mass_delete_guard_refuses_more_than_the_share() {
        let err = mass_delete_guard(100, 11, 0.1).unwrap_err();
        assert_eq!((err.linked, err.deletes), (100, 11));
        assert!(err.to_string().contains("11 of 100"));
        assert!(
            mass_delete_guard(0, 1, 1.0).is_err(),
            "deletes with nothing linked"
        );
        assert!(
            mass_delete_guard(10, 11, 5.0).is_err(),
            "share clamps to 1.0"
        );
        assert!(
            mass_delete_guard(10, 1, f64::NAN).is_err(),
            "NaN reads as 0.0"
        );
    }
}
