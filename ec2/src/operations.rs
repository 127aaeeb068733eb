//! The EC2 operations vpcrouter calls: the names its counters, metrics and IAM policies use.

/// The EC2 operations the client uses, in [`Ec2::call_counts`](crate::client::Ec2::call_counts) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    DescribeVpcs,
    DescribeSubnets,
    DescribeRouteTables,
    DescribeInstances,
    DescribeManagedPrefixLists,
    GetManagedPrefixListEntries,
    CreateRoute,
    ReplaceRoute,
    DeleteRoute,
    CreateManagedPrefixList,
    ModifyManagedPrefixList,
    DeleteManagedPrefixList,
}

/// How many operations [`Op`] has.
pub(crate) const OPS: usize = 12;

impl Op {
    /// Every operation, in counter order.
    pub(crate) const ALL: [Op; OPS] = [
        Op::DescribeVpcs,
        Op::DescribeSubnets,
        Op::DescribeRouteTables,
        Op::DescribeInstances,
        Op::DescribeManagedPrefixLists,
        Op::GetManagedPrefixListEntries,
        Op::CreateRoute,
        Op::ReplaceRoute,
        Op::DeleteRoute,
        Op::CreateManagedPrefixList,
        Op::ModifyManagedPrefixList,
        Op::DeleteManagedPrefixList,
    ];

    /// The operation's name in EC2's API (and in metrics and IAM policies).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::DescribeVpcs => "DescribeVpcs",
            Op::DescribeSubnets => "DescribeSubnets",
            Op::DescribeRouteTables => "DescribeRouteTables",
            Op::DescribeInstances => "DescribeInstances",
            Op::DescribeManagedPrefixLists => "DescribeManagedPrefixLists",
            Op::GetManagedPrefixListEntries => "GetManagedPrefixListEntries",
            Op::CreateRoute => "CreateRoute",
            Op::ReplaceRoute => "ReplaceRoute",
            Op::DeleteRoute => "DeleteRoute",
            Op::CreateManagedPrefixList => "CreateManagedPrefixList",
            Op::ModifyManagedPrefixList => "ModifyManagedPrefixList",
            Op::DeleteManagedPrefixList => "DeleteManagedPrefixList",
        }
    }
}

/// Every EC2 API operation the client can call (the IAM policy must allow exactly these).
pub fn operations() -> Vec<&'static str> {
    Op::ALL.iter().map(|op| op.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of `packaging/<file>`.
    fn policy_statements(file: &str) -> Vec<serde_json::Value> {
        let path = format!("{}/../packaging/{file}", env!("CARGO_MANIFEST_DIR"));
        let policy: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("policy file")).expect("policy JSON");
        policy["Statement"].as_array().expect("statements").clone()
    }

    fn actions(statement: &serde_json::Value) -> Vec<String> {
        statement["Action"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect()
    }

    #[test]
    fn iam_policies_allow_exactly_the_operations_called() {
        let mut called: Vec<String> = operations().iter().map(|op| format!("ec2:{op}")).collect();
        // CreateManagedPrefixList tags the new list as it creates it: EC2 authorizes that as
        // ec2:CreateTags.
        called.push("ec2:CreateTags".into());
        called.sort();
        for file in ["iam-policy.json", "iam-policy-scoped.json"] {
            let mut allowed: Vec<String> = policy_statements(file).iter().flat_map(actions).collect();
            allowed.sort();
            assert_eq!(allowed, called, "packaging/{file} is out of step with the EC2 calls in operations.rs");
        }
    }

    #[test]
    fn the_scoped_policy_allows_writes_only_on_named_resources_under_conditions() {
        for st in policy_statements("iam-policy-scoped.json") {
            let writes = actions(&st).iter().any(|a| !a.starts_with("ec2:Describe") && !a.starts_with("ec2:Get"));
            if !writes {
                continue;
            }
            let resource = st["Resource"].as_str().unwrap_or("*");
            assert!(resource.starts_with("arn:aws:ec2:REGION:ACCOUNT_ID:"), "{st}");
            assert!(st["Condition"].as_object().is_some_and(|c| !c.is_empty()), "a write without a condition: {st}");
        }
    }
}
