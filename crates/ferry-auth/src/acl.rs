//! ACLs with Kafka's semantics (KIP-11, KIP-290): a binding allows or denies one
//! principal, from one host, one operation on resources named literally or by prefix.
//!
//! A request is allowed when no deny binding matches it and an allow binding does. A
//! binding for `All` matches every operation; an allowed `Read`, `Write`, `Delete` or
//! `Alter` also allows `Describe`, and an allowed `AlterConfigs` allows
//! `DescribeConfigs` (deny bindings imply nothing). A literal name `*`, the principal
//! `User:*` and the host `*` match everything.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What an ACL protects. The codes are Kafka's where Kafka has the type; subscriptions
/// are Ferry's own and are managed over HTTP and the CLI only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    Subscription,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::Subscription,
    ];

    /// Kafka's code (`None` for subscriptions, which Kafka cannot name).
    pub fn kafka_code(self) -> Option<i8> {
        Some(match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::Subscription => return None,
        })
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        ResourceType::ALL
            .into_iter()
            .find(|t| t.kafka_code() == Some(code))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional_id",
            ResourceType::Subscription => "subscription",
        }
    }
}

/// The one name the cluster resource has, as in Kafka.
pub const CLUSTER_NAME: &str = "kafka-cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn kafka_code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        [PatternType::Literal, PatternType::Prefixed]
            .into_iter()
            .find(|p| p.kafka_code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Literal => "literal",
            PatternType::Prefixed => "prefixed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
    ];

    pub fn kafka_code(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        Operation::ALL.into_iter().find(|o| o.kafka_code() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::DescribeConfigs => "describe_configs",
            Operation::AlterConfigs => "alter_configs",
            Operation::IdempotentWrite => "idempotent_write",
        }
    }

    /// Operations whose allowance also allows `self`.
    fn implied_by(self) -> &'static [Operation] {
        match self {
            Operation::Describe => &[
                Operation::Read,
                Operation::Write,
                Operation::Delete,
                Operation::Alter,
            ],
            Operation::DescribeConfigs => &[Operation::AlterConfigs],
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Allow,
    Deny,
}

impl Permission {
    pub fn kafka_code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Allow => "allow",
            Permission::Deny => "deny",
        }
    }
}

/// Parses the names used over HTTP and the CLI (`describe_configs`; `-` also accepted
/// for `_`, and any case).
macro_rules! from_str_by_name {
    ($t:ty, $all:expr, $what:literal) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
                $all.into_iter()
                    .find(|v| v.as_str() == wanted)
                    .ok_or_else(|| {
                        let names: Vec<&str> = $all.iter().map(|v| v.as_str()).collect();
                        format!("{} must be one of {}, got {s:?}", $what, names.join(", "))
                    })
            }
        }
    };
}
from_str_by_name!(ResourceType, ResourceType::ALL, "resource type");
from_str_by_name!(Operation, Operation::ALL, "operation");
from_str_by_name!(
    PatternType,
    [PatternType::Literal, PatternType::Prefixed],
    "pattern type"
);
from_str_by_name!(
    Permission,
    [Permission::Allow, Permission::Deny],
    "permission"
);

/// One ACL binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acl {
    /// `User:<name>`, or `User:*` for every principal.
    pub principal: String,
    /// A client's IP address, or `*` for every host.
    pub host: String,
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub operation: Operation,
    pub permission: Permission,
}

/// Longest resource name or host an ACL may carry, in characters.
pub const NAME_CHARS_MAX: usize = 1024;

impl Acl {
    /// Checks the binding before it is stored.
    pub fn validate(&self) -> Result<(), String> {
        let p = crate::Principal::parse(&self.principal)?;
        crate::check_principal_name(&p.name)?;
        if self.host.is_empty() || self.host.len() > NAME_CHARS_MAX {
            return Err("host must be an IP address or *".into());
        }
        if self.host != "*" && self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "host must be an IP address or *, got {:?}",
                self.host
            ));
        }
        let chars = self.resource_name.chars().count();
        if chars == 0 || chars > NAME_CHARS_MAX {
            return Err(format!(
                "resource_name must have 1 to {NAME_CHARS_MAX} characters"
            ));
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return Err(format!(
                "the cluster resource is named {CLUSTER_NAME:?}, got {:?}",
                self.resource_name
            ));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == "*" {
            return Err("a prefixed pattern cannot be \"*\"; use a literal \"*\"".into());
        }
        Ok(())
    }

    fn matches_resource(&self, rtype: ResourceType, name: &str) -> bool {
        self.resource_type == rtype
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn matches_who(&self, principal: &str, host: &str) -> bool {
        (self.principal == "User:*" || self.principal == principal)
            && (self.host == "*" || self.host == host)
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from {} {} on {} {} {:?}",
            self.permission.as_str(),
            self.principal,
            self.host,
            self.operation.as_str(),
            self.pattern_type.as_str(),
            self.resource_type.as_str(),
            self.resource_name
        )
    }
}

/// Which bindings a describe or delete names: each field `None` matches anything.
/// `pattern_type` `None` matches both; [`PatternFilter::Match`] selects the bindings
/// that would apply to the name given (literal, `*` and prefixes of it), as Kafka's
/// MATCH does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    pub principal: Option<String>,
    pub host: Option<String>,
    pub resource_type: Option<ResourceType>,
    pub resource_name: Option<String>,
    pub pattern_type: Option<PatternFilter>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatternFilter {
    Literal,
    Prefixed,
    Match,
}

impl AclFilter {
    pub fn matches(&self, acl: &Acl) -> bool {
        let eq = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| f == v);
        if !eq(&self.principal, &acl.principal)
            || !eq(&self.host, &acl.host)
            || self.resource_type.is_some_and(|t| t != acl.resource_type)
            || self.operation.is_some_and(|o| o != acl.operation)
            || self.permission.is_some_and(|p| p != acl.permission)
        {
            return false;
        }
        match (self.pattern_type, &self.resource_name) {
            (Some(PatternFilter::Match), Some(name)) => {
                acl.matches_resource(acl.resource_type, name)
            }
            (Some(PatternFilter::Match), None) => true,
            (p, name) => {
                let pattern_ok = match p {
                    None | Some(PatternFilter::Match) => true,
                    Some(PatternFilter::Literal) => acl.pattern_type == PatternType::Literal,
                    Some(PatternFilter::Prefixed) => acl.pattern_type == PatternType::Prefixed,
                };
                pattern_ok && eq(name, &acl.resource_name)
            }
        }
    }
}

/// Whether `acls` allow `principal` (as `User:<name>`) from `host` to do `op` on the
/// resource; `no_match_allows` decides when no binding names the resource at all.
pub fn allowed(
    acls: &[Acl],
    principal: &str,
    host: &str,
    op: Operation,
    rtype: ResourceType,
    name: &str,
    no_match_allows: bool,
) -> bool {
    let mut any_for_resource = false;
    let mut allow = false;
    for acl in acls {
        if !acl.matches_resource(rtype, name) {
            continue;
        }
        any_for_resource = true;
        if !acl.matches_who(principal, host) {
            continue;
        }
        match acl.permission {
            Permission::Deny if acl.operation == op || acl.operation == Operation::All => {
                return false
            }
            Permission::Deny => {}
            Permission::Allow => {
                allow |= acl.operation == op
                    || acl.operation == Operation::All
                    || op.implied_by().contains(&acl.operation);
            }
        }
    }
    allow || (!any_for_resource && no_match_allows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        principal: &str,
        rtype: ResourceType,
        name: &str,
        pattern: PatternType,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            principal: principal.into(),
            host: "*".into(),
            resource_type: rtype,
            resource_name: name.into(),
            pattern_type: pattern,
            operation: op,
            permission: perm,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn allow_by_literal_prefix_and_wildcard_and_deny_wins() {
        let acls = vec![
            acl("User:alice", Topic, "orders", Literal, Read, Allow),
            acl("User:alice", Topic, "pay.", Prefixed, Write, Allow),
            acl("User:*", Topic, "*", Literal, Describe, Allow),
            acl("User:mallory", Topic, "*", Literal, All, Deny),
        ];
        let ok = |p: &str, op, name: &str| allowed(&acls, p, "10.0.0.1", op, Topic, name, false);
        assert!(ok("User:alice", Read, "orders"));
        assert!(!ok("User:alice", Write, "orders"));
        assert!(ok("User:alice", Write, "pay.in"));
        assert!(!ok("User:alice", Write, "pays"));
        assert!(ok("User:bob", Describe, "anything"));
        assert!(!ok("User:bob", Read, "orders"));
        assert!(!ok("User:mallory", Describe, "orders"), "deny beats allow");
    }

    #[test]
    fn read_write_alter_and_delete_imply_describe_but_deny_implies_nothing() {
        let acls = vec![
            acl("User:a", Topic, "t", Literal, Write, Allow),
            acl("User:a", Topic, "c", Literal, AlterConfigs, Allow),
            acl("User:b", Topic, "t", Literal, Describe, Deny),
            acl("User:b", Topic, "t", Literal, Read, Allow),
        ];
        assert!(allowed(&acls, "User:a", "h", Describe, Topic, "t", false));
        assert!(allowed(
            &acls,
            "User:a",
            "h",
            DescribeConfigs,
            Topic,
            "c",
            false
        ));
        assert!(!allowed(&acls, "User:a", "h", Describe, Topic, "c", false));
        assert!(!allowed(&acls, "User:b", "h", Describe, Topic, "t", false));
        assert!(allowed(&acls, "User:b", "h", Read, Topic, "t", false));
    }

    #[test]
    fn hosts_and_the_no_match_setting() {
        let mut a = acl("User:a", Group, "g", Literal, Read, Allow);
        a.host = "10.0.0.1".into();
        let acls = vec![a];
        assert!(allowed(
            &acls, "User:a", "10.0.0.1", Read, Group, "g", false
        ));
        assert!(!allowed(
            &acls, "User:a", "10.0.0.2", Read, Group, "g", true
        ));
        // No binding names group h: the setting decides.
        assert!(allowed(&acls, "User:a", "10.0.0.2", Read, Group, "h", true));
        assert!(!allowed(
            &acls, "User:a", "10.0.0.2", Read, Group, "h", false
        ));
    }

    #[test]
    fn filters_select_as_kafka_does() {
        let lit = acl("User:a", Topic, "orders", Literal, Read, Allow);
        let pre = acl("User:a", Topic, "ord", Prefixed, Read, Allow);
        let star = acl("User:a", Topic, "*", Literal, Read, Allow);
        let f = AclFilter {
            resource_name: Some("orders".into()),
            pattern_type: Some(PatternFilter::Match),
            ..Default::default()
        };
        assert!(f.matches(&lit) && f.matches(&pre) && f.matches(&star));
        let f = AclFilter {
            resource_name: Some("orders".into()),
            ..Default::default()
        };
        assert!(f.matches(&lit) && !f.matches(&pre) && !f.matches(&star));
        let f = AclFilter {
            pattern_type: Some(PatternFilter::Prefixed),
            ..Default::default()
        };
        assert!(!f.matches(&lit) && f.matches(&pre));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut a = acl("alice", Topic, "t", Literal, Read, Allow);
        assert!(a.validate().unwrap_err().contains("User:<name>"));
        a.principal = "User:alice".into();
        a.host = "example.com".into();
        assert!(a.validate().unwrap_err().contains("IP address"));
        a.host = "*".into();
        a.resource_type = Cluster;
        assert!(a.validate().unwrap_err().contains("kafka-cluster"));
        a.resource_name = CLUSTER_NAME.into();
        a.validate().unwrap();
        assert_eq!("describe-configs".parse::<Operation>(), Ok(DescribeConfigs));
        assert!("fly".parse::<Operation>().unwrap_err().contains("read"));
    }
}
