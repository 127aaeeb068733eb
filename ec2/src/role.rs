//! Another account's route tables: EC2 calls made with the credentials of an assumed IAM
//! role (`--role-arn`), as in shared VPCs where the route tables belong to the VPC owner.
//!
//! The source credentials are the standard chain's (environment, profile, instance role,
//! ...); they sign only the STS `AssumeRole` call. The assumed credentials are cached by the
//! EC2 client's identity cache (the SDK's lazy cache) and fetched again 10–15 s before they
//! expire (its buffer of 10 s plus up to 50 % jitter), so a session of STS's default hour
//! is renewed about once an hour, before any call would use expired credentials.
//!
//! The values are checked here, once, at the command line's edge.

use std::fmt;
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;

/// The partitions whose IAM role ARNs `--role-arn` takes.
const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

/// The fields of an ARN, `arn:<partition>:<service>:<region>:<account>:<resource>`, with its
/// partition known and its account 12 digits; the service, region and resource are for the
/// caller to check.
pub(crate) struct Arn<'a> {
    /// E.g. `iam`, `sns`.
    pub(crate) service: &'a str,
    /// Empty for global services (IAM).
    pub(crate) region: &'a str,
    /// The 12-digit account id.
    pub(crate) account: &'a str,
    /// What follows the account: `role/NAME`, a topic name, ...
    pub(crate) resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Splits `raw`; the error says which field is wrong.
    pub(crate) fn split(raw: &'a str) -> Result<Arn<'a>, String> {
        let mut parts = raw.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("it does not have the six fields of an ARN".into());
        };
        if !PARTITIONS.contains(&partition) {
            return Err(format!("unknown partition '{partition}'"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("the account id '{account}' is not 12 digits"));
        }
        Ok(Arn { service, region, account, resource })
    }
}

/// An IAM role ARN: `arn:<partition>:iam::<12-digit account>:role/[<path>/]<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleArn {
    /// The ARN as given, checked: what STS is asked to assume, and what logs and errors show.
    arn: String,
    /// The account id taken from the ARN: the account whose route tables are managed, logged
    /// at startup.
    account: String,
}

impl RoleArn {
    /// Checks `raw` (STS takes 20–2048 characters; role names are 1–64 characters of
    /// `A-Z a-z 0-9 + = , . @ _ -`, paths the same plus `/`).
    pub fn parse(raw: &str) -> Result<RoleArn, String> {
        let hint = "give arn:aws:iam::<12-digit account id>:role/<name> (partition aws, aws-cn or aws-us-gov)";
        let bad = |why: &str| format!("'{raw}' is not an IAM role ARN: {why}; {hint}");
        let Arn { service, region, account, resource } = Arn::split(raw).map_err(|why| bad(&why))?;
        if service != "iam" || !region.is_empty() {
            return Err(bad("the service must be iam, with an empty region field"));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(bad("the resource must start with role/"));
        };
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(name_char) {
            return Err(bad(&format!("the role name '{name}' is not 1–64 characters of A-Z a-z 0-9 + = , . @ _ -")));
        }
        if !path_and_name.chars().all(|c| c == '/' || name_char(c)) || raw.len() > 2048 {
            return Err(bad("the role path has characters IAM does not allow, or the ARN is over 2048 characters"));
        }
        Ok(RoleArn { arn: raw.to_owned(), account: account.to_owned() })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The account the role belongs to (the account whose route tables are managed).
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// A character STS allows in a role session name (`[\w+=,.@-]`).
fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// Checks a role session name: 2–64 characters of `A-Z a-z 0-9 + = , . @ _ -`.
pub fn check_session_name(raw: &str) -> Result<String, String> {
    if (2..=64).contains(&raw.len()) && raw.chars().all(session_char) {
        Ok(raw.to_owned())
    } else {
        Err(format!("'{raw}' is not a role session name: use 2–64 characters from A-Z a-z 0-9 + = , . @ _ -"))
    }
}

/// The default session name, `vpcrouter-<id>` (the cluster instance id or the host name),
/// made to fit STS's rules: other characters become `-`, and it is cut at 64 characters.
/// It shows in the role account's CloudTrail as who made the calls.
pub fn default_session_name(id: Option<&str>) -> String {
    let mut name = String::from("vpcrouter");
    if let Some(id) = id.map(str::trim).filter(|id| !id.is_empty()) {
        name.push('-');
        name.extend(id.chars().map(|c| if session_char(c) { c } else { '-' }));
    }
    name.chars().take(64).collect()
}

/// Checks an external id: 2–1224 characters of `A-Z a-z 0-9 + = , . @ : / _ -`.
pub fn check_external_id(raw: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
    if (2..=1224).contains(&raw.len()) && raw.chars().all(ok) {
        Ok(raw.to_owned())
    } else {
        Err("the external id is not usable: use 2–1224 characters from A-Z a-z 0-9 + = , . @ : / _ -".to_owned())
    }
}

/// The role vpcrouter assumes for its EC2 calls.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// `--role-arn`.
    pub arn: RoleArn,
    /// `--role-session-name` (default: [`default_session_name`]).
    pub session_name: String,
    /// `--role-external-id`, if the role's trust policy asks for one.
    pub external_id: Option<String>,
    /// How long a session lasts; `None`: STS's default (one hour). The command line leaves
    /// it unset; tests shorten it to see the credentials refreshed.
    pub session_length: Option<Duration>,
}

impl fmt::Debug for RoleConfig {
    /// The external id is left out: it is shared with the role's owner only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleConfig")
            .field("arn", &self.arn.as_str())
            .field("session_name", &self.session_name)
            .field("external_id", &self.external_id.as_ref().map(|_| "(set)"))
            .field("session_length", &self.session_length)
            .finish()
    }
}

impl RoleConfig {
    /// A credentials provider assuming this role through STS, signed by `base`'s
    /// credentials and talking to `base`'s region (and endpoint, if one is configured).
    /// It does not cache: the client it is given to does (see the module's notes).
    pub async fn provider(&self, base: &SdkConfig) -> SharedCredentialsProvider {
        let mut builder =
            AssumeRoleProvider::builder(self.arn.as_str()).configure(base).session_name(self.session_name.clone());
        if let Some(id) = &self.external_id {
            builder = builder.external_id(id.clone());
        }
        if let Some(length) = self.session_length {
            builder = builder.session_length(length);
        }
        SharedCredentialsProvider::new(builder.build().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_of_the_three_partitions_are_taken() {
        for ok in [
            "arn:aws:iam::222222222222:role/vpcrouter",
            "arn:aws-cn:iam::123456789012:role/path/to/Route_Writer+1=a,b.c@d-e",
            "arn:aws-us-gov:iam::000000000000:role/x",
        ] {
            let arn = RoleArn::parse(ok).expect(ok);
            assert_eq!(arn.as_str(), ok);
        }
        assert_eq!(RoleArn::parse("arn:aws:iam::222222222222:role/x").unwrap().account(), "222222222222");
    }

    #[test]
    fn malformed_role_arns_say_what_is_wrong() {
        let err = |raw: &str| RoleArn::parse(raw).expect_err(raw);
        assert!(err("vpcrouter").contains("six fields"));
        assert!(err("arn:aws-eu:iam::222222222222:role/x").contains("unknown partition 'aws-eu'"));
        assert!(err("arn:aws:sts::222222222222:role/x").contains("service must be iam"));
        assert!(err("arn:aws:iam:us-east-1:222222222222:role/x").contains("empty region"));
        assert!(err("arn:aws:iam::22222222222:role/x").contains("'22222222222' is not 12 digits"));
        assert!(err("arn:aws:iam::22222222222a:role/x").contains("not 12 digits"));
        assert!(err("arn:aws:iam::222222222222:user/x").contains("must start with role/"));
        assert!(err("arn:aws:iam::222222222222:role/").contains("role name ''"));
        assert!(err("arn:aws:iam::222222222222:role/a b").contains("role name 'a b'"));
        assert!(err(&format!("arn:aws:iam::222222222222:role/{}", "x".repeat(65))).contains("1–64"));
        assert!(err("arn:aws:iam::222222222222:role/p*th/x").contains("role path"));
        let line = err("arn:aws:iam::1:role/x");
        assert!(!line.contains('\n') && line.contains("give arn:aws:iam::<12-digit account id>:role/<name>"), "{line}");
    }

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(check_session_name("vpcrouter-a.b@c").unwrap(), "vpcrouter-a.b@c");
        for bad in ["x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_session_name(bad).is_err(), "{bad}");
        }
        assert_eq!(default_session_name(None), "vpcrouter");
        assert_eq!(default_session_name(Some(" ")), "vpcrouter");
        assert_eq!(default_session_name(Some("ip-10-0-0-1.ec2.internal")), "vpcrouter-ip-10-0-0-1.ec2.internal");
        assert_eq!(default_session_name(Some("a:b/c d")), "vpcrouter-a-b-c-d");
        let long = default_session_name(Some(&"h".repeat(100)));
        assert_eq!(long.len(), 64);
        for id in ["a:b/c d", "é", &"h".repeat(100), "i-0abc"] {
            assert!(check_session_name(&default_session_name(Some(id))).is_ok(), "{id}");
        }
    }

    #[test]
    fn external_ids_fit_sts_rules() {
        assert!(check_external_id("a1:b/c=d").is_ok());
        for bad in ["q", "q q", &"q".repeat(1225)] {
            let e = check_external_id(bad).expect_err(bad);
            assert!(!e.contains(bad), "the value is not repeated: {e}");
        }
    }

    #[test]
    fn the_packaged_policies_allow_assuming_the_role() {
        let statements = |file: &str| {
            let path = format!("{}/../packaging/{file}", env!("CARGO_MANIFEST_DIR"));
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("policy file")).expect("policy JSON");
            doc["Statement"].as_array().expect("statements").clone()
        };
        let trust = statements("iam-role-trust-policy.json");
        assert_eq!(trust.len(), 1);
        assert_eq!(trust[0]["Action"], "sts:AssumeRole");
        assert!(trust[0]["Principal"]["AWS"]
            .as_str()
            .is_some_and(|p| p.starts_with("arn:aws:iam::SOURCE_ACCOUNT_ID:")));
        assert!(trust[0]["Condition"]["StringEquals"]["sts:ExternalId"].is_string());
        let source = statements("iam-policy-assume-role.json");
        assert_eq!(source.len(), 1);
        assert_eq!(source[0]["Action"], "sts:AssumeRole");
        let resource = source[0]["Resource"].as_str().expect("one role");
        assert!(RoleArn::parse(&resource.replace("TARGET_ACCOUNT_ID", "222222222222")).is_ok(), "{resource}");
    }

    #[test]
    fn debug_output_hides_the_external_id() {
        let c = RoleConfig {
            arn: RoleArn::parse("arn:aws:iam::222222222222:role/x").unwrap(),
            session_name: "vpcrouter".into(),
            external_id: Some("s3cr3t-id".into()),
            session_length: None,
        };
        let text = format!("{c:?}");
        assert!(text.contains("(set)") && !text.contains("s3cr3t-id"), "{text}");
    }
}
