//! Checks of the budget keys (their types are src/budget/spec.rs, re-exported here).

/// Checks the `budgets:` section and every intent's `budget`; the error names the field.
pub fn validate_budgets(c: &super::Config) -> Result<(), (String, String)> {
    if let Some(url) = &c.budgets.redis_url {
        crate::budget::spec::redis_address(url)
            .map_err(|m| ("budgets.redis_url".to_string(), m))?;
    }
    for (name, spec) in &c.intents {
        if let Some(b) = &spec.budget {
            b.check()
                .map_err(|m| (format!("intents.{name}.budget"), m))?;
        }
    }
    Ok(())
}
