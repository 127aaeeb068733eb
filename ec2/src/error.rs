//! What went wrong talking to EC2, STS or the instance metadata service: [`Ec2Error`], and
//! the classification of the SDK's errors into it (EC2's error codes for throttling,
//! server-side trouble and refused credentials).

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;

use crate::operations::Op;

/// Error codes EC2 uses when the account's request rate is exceeded.
const THROTTLE_CODES: &[&str] = &[
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "EC2ThrottledException",
];

/// Error codes EC2 uses for server-side trouble (worth retrying later), besides throttling.
const TRANSIENT_CODES: &[&str] = &[
    "BandwidthLimitExceeded", "PriorRequestNotComplete", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "InternalFailure", "ServiceUnavailable", "Unavailable",
];

/// Error codes meaning the credentials are wrong, expired or lack permission.
const AUTH_CODES: &[&str] = &[
    "AuthFailure", "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "InvalidClientTokenId",
    "SignatureDoesNotMatch", "OptInRequired", "Blocked", "ExpiredToken", "RequestExpired",
];

/// What went wrong talking to EC2 or the instance metadata service.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// No credentials could be loaded.
    #[error("{operation}: no AWS credentials found: set AWS credentials (env, profile or instance role) ({message})")]
    NoCredentials {
        /// EC2 operation.
        operation: &'static str,
        /// Details.
        message: String,
    },
    /// The credentials were rejected or lack permission.
    #[error("{operation}: access denied ({code}): {message}; check the AWS credentials and that their IAM policy allows the calls listed in packaging/iam-policy.json (ec2:{operation} among them)")]
    AccessDenied {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// The VPC does not exist in the region.
    #[error("VPC '{vpc_id}' not found in region '{region}': check -v/--vpc and -r/--region")]
    VpcNotFound {
        /// The VPC asked for.
        vpc_id: String,
        /// The region searched.
        region: String,
    },
    /// EC2 refused the request (validation, unknown route table or route, ...).
    #[error("{operation} rejected by EC2 ({code}): {message}")]
    Rejected {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// EC2 throttled the request or failed on its side, after the SDK's retries.
    #[error("{operation}: EC2 throttled or unavailable ({code}): {message}; transient, try again later")]
    Unavailable {
        /// EC2 operation.
        operation: &'static str,
        /// EC2 error code (or HTTP status).
        code: String,
        /// EC2 error message.
        message: String,
    },
    /// Timeout, connection or DNS failure, or an unreadable response.
    #[error("{operation}: could not talk to EC2 in region '{region}': {message}; check the network, -r/--region and AWS_ENDPOINT_URL")]
    Transport {
        /// EC2 operation.
        operation: &'static str,
        /// Region of the client.
        region: String,
        /// Details.
        message: String,
    },
    /// The role of `--role-arn` could not be assumed (STS refused, or was not reachable, or
    /// there were no source credentials to ask it with).
    #[error("cannot assume role {role}: {reason}: check the trust policy of the role and the source credentials")]
    AssumeRole {
        /// EC2 operation whose credentials were wanted.
        operation: &'static str,
        /// The role's ARN.
        role: String,
        /// What STS said, or why it could not be asked.
        reason: String,
        /// True when STS was unreachable or failed on its side (worth trying again).
        transient: bool,
    },
    /// The instance metadata service did not give region and VPC.
    #[error("cannot read region and VPC from the EC2 instance metadata service ({message}); when not running on EC2, pass -r/--region and -v/--vpc")]
    NoMetadata {
        /// Details.
        message: String,
    },
    /// Anything else (e.g. the request could not be built).
    #[error("{operation}: {message}")]
    Other {
        /// EC2 operation.
        operation: &'static str,
        /// Details.
        message: String,
    },
}

impl Ec2Error {
    /// True for errors that may go away by themselves (throttling, 5xx, timeouts, network);
    /// false for those needing the operator (VPC not found, credentials, validation).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Ec2Error::Unavailable { .. } | Ec2Error::Transport { .. } | Ec2Error::AssumeRole { transient: true, .. }
        )
    }

    /// True when EC2 throttled the call: the account's bucket is empty.
    pub fn is_throttle(&self) -> bool {
        matches!(self, Ec2Error::Unavailable { code, .. } if THROTTLE_CODES.contains(&code.as_str()))
    }

    /// True when EC2 refused a route change because the route or table is not as
    /// vpcrouter believed (gone, already there, unknown target): the VPC must be read again.
    pub fn shows_stale_state(&self) -> bool {
        match self {
            Ec2Error::Rejected { code, message, .. } => {
                code.ends_with("NotFound")
                    || code.contains("AlreadyExists")
                    // ModifyManagedPrefixList from an older version of the list.
                    || code == "PrefixListVersionMismatch"
                    // ReplaceRoute of a route that is not there.
                    || (code == "InvalidParameterValue" && message.contains("no route defined"))
            }
            _ => false,
        }
    }

    /// True when a DeleteRoute found no route (or a DeleteManagedPrefixList no list): what
    /// it was meant to achieve holds.
    pub fn is_route_not_found(&self) -> bool {
        matches!(self, Ec2Error::Rejected { code, .. }
            if code == "InvalidRoute.NotFound" || code == "InvalidRouteNotFound" || code == "InvalidPrefixListID.NotFound")
    }

    /// True when a prefix list is still busy with an earlier change (EC2 applies list
    /// changes asynchronously): the call may be sent again shortly.
    pub(crate) fn is_list_busy(&self) -> bool {
        matches!(self, Ec2Error::Rejected { code, .. } if code == "IncorrectState")
    }

    /// Classifies an SDK error of `op`.
    pub(crate) fn classify<E>(op: Op, region: &str, err: SdkError<E>) -> Ec2Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let operation = op.name();
        if let SdkError::ServiceError(ctx) = &err {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map_or_else(|| format!("HTTP {status}"), str::to_owned);
            let message = ctx.err().message().unwrap_or_default().to_owned();
            return if AUTH_CODES.contains(&code.as_str()) {
                Ec2Error::AccessDenied { operation, code, message }
            } else if THROTTLE_CODES.contains(&code.as_str())
                || TRANSIENT_CODES.contains(&code.as_str())
                || status >= 500
                || status == 429
            {
                Ec2Error::Unavailable { operation, code, message }
            } else {
                Ec2Error::Rejected { operation, code, message }
            };
        }
        let message = error_chain(&err);
        let transport = Ec2Error::Transport { operation, region: region.to_owned(), message: message.clone() };
        match &err {
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => transport,
            _ if credentials_missing(&err) => Ec2Error::NoCredentials { operation, message },
            SdkError::DispatchFailure(d) if !d.is_user() => transport,
            _ => Ec2Error::Other { operation, message },
        }
    }
}

/// True when the call failed for want of credentials: the credentials provider's error is
/// among the error's sources (the SDK resolves the identity before sending, and reports its
/// error as a dispatch failure). A provider that timed out does not count: that is a
/// transport problem, not a missing setting.
pub(crate) fn credentials_missing(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return !matches!(c, CredentialsError::ProviderTimedOut(_));
        }
        next = e.source();
    }
    false
}

/// Why the assumed role's credentials could not be had, and whether that may pass by
/// itself, when `err` (an EC2 call's) failed for want of credentials; `None` otherwise.
pub(crate) fn assume_role_failure(err: &(dyn std::error::Error + 'static)) -> Option<(String, bool)> {
    let mut next = Some(err);
    let creds = loop {
        let e = next?;
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            break c;
        }
        next = e.source();
    };
    if let CredentialsError::ProviderTimedOut(_) = creds {
        return Some(("STS did not answer in time".to_owned(), true));
    }
    let mut next = std::error::Error::source(creds);
    while let Some(e) = next {
        if let Some(sts) = e.downcast_ref::<aws_sdk_sts::error::SdkError<AssumeRoleError>>() {
            return Some(match sts {
                SdkError::ServiceError(ctx) => {
                    let status = ctx.raw().status().as_u16();
                    let code = ctx.err().code().map_or_else(|| format!("HTTP {status}"), str::to_owned);
                    let message = ctx.err().message().unwrap_or_default().trim();
                    let transient = status >= 500 || status == 429 || THROTTLE_CODES.contains(&code.as_str());
                    let message = one_line(message.trim_end_matches('.'));
                    let text = if message.is_empty() {
                        format!("STS refused AssumeRole ({code})")
                    } else {
                        format!("STS refused AssumeRole ({code}): {message}")
                    };
                    (text, transient)
                }
                SdkError::DispatchFailure(_) if credentials_missing(sts) => (
                    format!(
                        "no source credentials to call STS with: set AWS credentials (env, profile or instance role) ({})",
                        one_line(&credentials_error_text(sts))
                    ),
                    false,
                ),
                SdkError::DispatchFailure(d) if d.is_user() => (one_line(&error_chain(sts)), false),
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                    (format!("could not talk to STS: {}", one_line(&error_chain(sts))), true)
                }
                _ => (one_line(&error_chain(sts)), false),
            });
        }
        next = e.source();
    }
    Some((one_line(&error_chain(creds)), false))
}

/// The text of the first credentials provider error among `err`'s sources (with its own
/// sources), or of `err` when there is none.
fn credentials_error_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return error_chain(e);
        }
        next = e.source();
    }
    error_chain(err)
}

/// `text` on one line: lines trimmed and joined by `; ` (by a space after a colon), as the
/// SDK lists the providers of its chain one a line.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// An error and its sources, joined by `: ` (repeated texts dropped).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_sdk_texts_become_one_line() {
        let chain = "no credentials found in chain. Attempted:\n  Environment: not set\n  Profile: not enabled\n";
        assert_eq!(
            one_line(chain),
            "no credentials found in chain. Attempted: Environment: not set; Profile: not enabled"
        );
        assert_eq!(one_line("one"), "one");
    }

    #[test]
    fn errors_tell_throttling_and_stale_state_apart() {
        let rejected = |code: &str, message: &str| Ec2Error::Rejected {
            operation: "ReplaceRoute",
            code: code.into(),
            message: message.into(),
        };
        let unavailable =
            |code: &str| Ec2Error::Unavailable { operation: "CreateRoute", code: code.into(), message: String::new() };
        assert!(
            unavailable("RequestLimitExceeded").is_throttle() && unavailable("RequestLimitExceeded").is_transient()
        );
        assert!(!unavailable("InternalError").is_throttle() && unavailable("InternalError").is_transient());
        for stale in [
            rejected("RouteAlreadyExists", "The route identified by 10.1.0.0/16 already exists."),
            rejected("InvalidRoute.NotFound", "no route with destination-cidr-block 10.1.0.0/16"),
            rejected("InvalidRouteTableID.NotFound", "The routeTable ID 'rtb-1' does not exist"),
            rejected("InvalidNetworkInterfaceID.NotFound", "The networkInterface ID 'eni-1' does not exist"),
            rejected("InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist"),
            rejected(
                "InvalidParameterValue",
                "There is no route defined for '10.1.0.0/16' in the route table. Use CreateRoute instead.",
            ),
        ] {
            assert!(stale.shows_stale_state() && !stale.is_transient(), "{stale:?}");
        }
        assert!(!rejected("InvalidParameterValue", "Value (x) for parameter cidr is invalid").shows_stale_state());
        assert!(!unavailable("RequestLimitExceeded").shows_stale_state());
        assert!(rejected("PrefixListVersionMismatch", "The prefix list has the incorrect version number.")
            .shows_stale_state());
        assert!(rejected("IncorrectState", "modify-in-progress").is_list_busy());
        assert!(!rejected("IncorrectState", "").shows_stale_state());
        assert!(rejected("InvalidPrefixListID.NotFound", "").is_route_not_found());
        assert!(rejected("InvalidRoute.NotFound", "").is_route_not_found());
        assert!(!rejected("RouteAlreadyExists", "").is_route_not_found());
    }
}
