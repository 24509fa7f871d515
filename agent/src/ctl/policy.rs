//! `plexus ctl policy`: the committed access policy (`/v1/policy`) as text.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::Value;

/// The default, then the rules in the order they take effect: the first rule that matches a
/// call decides it.
pub fn policy_table(doc: &Value) -> String {
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let default = text(&doc["default"]);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "default {default}  (committed state at index {})",
        text(&doc["applied_index"])
    );
    let rules = doc["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        let _ = writeln!(out, "no rules: every call gets the default ({default})");
        return out;
    }
    let _ = writeln!(out, "\n{:>3}  {:<6} {:<24} to", "#", "action", "from");
    for (i, rule) in rules.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}  {:<6} {:<24} {}",
            i + 1,
            text(&rule["action"]),
            text(&rule["from"]),
            text(&rule["to"]),
        );
    }
    let _ = writeln!(
        out,
        "\nthe first matching rule decides; \"*\" is any service; a node hosting no service \
         matches only rules from \"*\""
    );
    out
}

/// `plexus ctl policy`.
pub async fn print_policy(admin: SocketAddr, json: bool) -> Result<(), String> {
    let (body, value) = super::get_json(admin, "/v1/policy").await?;
    if json {
        print!("{body}");
    } else {
        print!("{}", policy_table(&value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_are_listed_in_precedence_order_under_the_default() {
        let doc = json!({
            "default": "deny",
            "applied_index": 42,
            "rules": [
                {"action": "allow", "from": "web", "to": "payments"},
                {"action": "deny", "from": "*", "to": "ledger"},
            ],
        });
        let table = policy_table(&doc);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "default deny  (committed state at index 42)");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["#", "action", "from", "to"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["1", "allow", "web", "payments"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["2", "deny", "*", "ledger"]
        );
    }

    #[test]
    fn a_policy_without_rules_says_what_the_default_does() {
        let doc = json!({"default": "allow", "applied_index": 0, "rules": []});
        assert!(policy_table(&doc).contains("no rules: every call gets the default (allow)"));
    }
}
