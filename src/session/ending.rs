//! Why a session ended: a closed set. It is stored in records (`end_reason`), used as the
//! `terminations_total{reason}` label and decides whether the backend must be told. Free text
//! (an admin's "stolen laptop") goes to the audit log only, never into a label.

/// The reason a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The backend's logout route, or the user API's `logout`.
    Logout,
    /// A logout for every session of the user (`scope: "all"`, the user API's `logout-all`).
    LogoutAll,
    /// The user ended another of their sessions through the user API.
    UserTerminated,
    /// An admin ended it (the admin API, the dashboard, the CLI).
    AdminTerminated,
    UserBlocked,
    /// A rotated-out refresh token was presented again.
    RefreshTokenReuse,
    /// Inactive past `sessions.inactivity_timeout` with `idle_policy = "terminate"`.
    IdleTimeout,
    /// Ended by the admin's clean-inactive action.
    Inactive,
    /// Every token expired (the sweeper).
    Expired,
    PasswordChange,
    /// The backend's own session route ended it (Strapi `DELETE /api/auth/sessions/:id`).
    BackendRevoked,
}

impl EndReason {
    pub const ALL: [EndReason; 11] = [
        EndReason::Logout,
        EndReason::LogoutAll,
        EndReason::UserTerminated,
        EndReason::AdminTerminated,
        EndReason::UserBlocked,
        EndReason::RefreshTokenReuse,
        EndReason::IdleTimeout,
        EndReason::Inactive,
        EndReason::Expired,
        EndReason::PasswordChange,
        EndReason::BackendRevoked,
    ];

    /// Stable snake_case name (records, metric label, API `endReason`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::LogoutAll => "logout_all",
            EndReason::UserTerminated => "user_terminated",
            EndReason::AdminTerminated => "admin_terminated",
            EndReason::UserBlocked => "user_blocked",
            EndReason::RefreshTokenReuse => "refresh_token_reuse",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::Inactive => "inactive",
            EndReason::Expired => "expired",
            EndReason::PasswordChange => "password_change",
            EndReason::BackendRevoked => "backend_revoked",
        }
    }

    /// The reason named `s`, if it is one (an admin may give a known reason, e.g. the plugin's
    /// `terminate-all` with `password_change`).
    pub fn parse(s: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the backend's session must be revoked too. Only an expired session needs
    /// nothing: none of its tokens is accepted by the backend any more.
    pub fn revokes_backend(self) -> bool {
        self != EndReason::Expired
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        assert!(EndReason::ALL.iter().all(|r| EndReason::parse(r.as_str()) == Some(*r)));
        assert_eq!(EndReason::parse("stolen laptop"), None);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EndReason::ALL.len());
    }
}
