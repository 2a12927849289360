//! `mailroom config` without a subcommand: parameters and their values, as `postconf`
//! prints them (`name = value`, sorted by name).

use std::io::Write;

use crate::config::{Config, known_parameters};
use crate::sysexits::{Error, Result};

use super::suggest;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Show {
    /// Only these parameters (in this order); empty means all.
    pub names: Vec<String>,
    /// `-n`: only what `main.cf` sets.
    pub only_set: bool,
    /// `-d`: the defaults, whatever `main.cf` says.
    pub defaults: bool,
    /// `-x`: expand `$name` references.
    pub expand: bool,
    /// `-h`: values only, without `name = `.
    pub values_only: bool,
}

/// The lines to print, or an error naming the first unknown parameter asked for (with a
/// suggestion). `warn` receives problems met while expanding.
pub fn render(config: &Config, show: &Show, warn: &mut dyn FnMut(&str)) -> Result<Vec<String>> {
    let names = chosen_names(config, show)?;
    // Defaults are expanded against the built-in table alone.
    let pristine = show.defaults.then(|| Config::from_text("", config.file()));
    let source = pristine.as_ref().unwrap_or(config);
    let mut lines = Vec::with_capacity(names.len());
    for name in names {
        let written = if show.defaults {
            config.default_text(&name).unwrap_or_default()
        } else {
            match config.raw(&name) {
                Some(raw) => raw.to_string(),
                None => config.default_text(&name).unwrap_or_default(),
            }
        };
        let value = if show.expand {
            match source.get(&name) {
                Ok(value) => value,
                Err(e) => {
                    warn(&e.message);
                    written
                }
            }
        } else {
            written
        };
        lines.push(match (show.values_only, value.is_empty()) {
            (true, _) => value,
            (false, true) => format!("{name} ="),
            (false, false) => format!("{name} = {value}"),
        });
    }
    Ok(lines)
}

fn chosen_names(config: &Config, show: &Show) -> Result<Vec<String>> {
    if !show.names.is_empty() {
        for name in &show.names {
            let known = known_parameters().iter().any(|p| p.name == name);
            // A name the file sets is shown even when mailroom does not know it.
            let in_file = config.is_set(name) && !show.defaults;
            if !known && !in_file {
                return Err(Error::usage(suggest::unknown_parameter(name)));
            }
        }
        let mut names = show.names.clone();
        if show.only_set {
            names.retain(|n| config.is_set(n));
        }
        return Ok(names);
    }
    let mut names: Vec<String> = if show.only_set && !show.defaults {
        config
            .settings()
            .into_iter()
            .map(|(n, _, _)| n.to_string())
            .collect()
    } else {
        known_parameters()
            .iter()
            .map(|p| p.name.to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// Prints [`render`]'s lines on `out`; a reader that went away is not an error.
pub fn print(config: &Config, show: &Show, out: &mut dyn Write) -> Result<()> {
    let mut warn = |w: &str| eprintln!("mailroom: warning: {w}");
    let lines = render(config, show, &mut warn)?;
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    super::write_out(out, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::from_text(text, Path::new("/etc/mailroom/main.cf"))
    }

    fn lines(text: &str, show: Show) -> Vec<String> {
        render(&config(text), &show, &mut |w| panic!("{w}")).unwrap()
    }

    #[test]
    fn only_set_lists_the_file_sorted() {
        let got = lines(
            "relayhost =\nmyhostname = a.example\nbiff = no\nfoo = 1\n",
            Show {
                only_set: true,
                ..Show::default()
            },
        );
        assert_eq!(
            got,
            [
                "biff = no",
                "foo = 1",
                "myhostname = a.example",
                "relayhost ="
            ]
        );
    }

    #[test]
    fn selected_names_raw_expanded_and_defaults() {
        let text = "myhostname = a.example\nmyorigin = $myhostname\n";
        let pick = |expand, defaults| Show {
            names: vec!["myorigin".into(), "queue_directory".into()],
            expand,
            defaults,
            ..Show::default()
        };
        assert_eq!(
            lines(text, pick(false, false)),
            [
                "myorigin = $myhostname",
                "queue_directory = /var/spool/mailroom"
            ]
        );
        assert_eq!(lines(text, pick(true, false))[0], "myorigin = a.example");
        assert_eq!(lines(text, pick(false, true))[0], "myorigin = $myhostname");
        let values = Show {
            names: vec!["myhostname".into()],
            values_only: true,
            ..Show::default()
        };
        assert_eq!(lines(text, values), ["a.example"]);
    }

    #[test]
    fn every_known_parameter_is_listed() {
        let all = lines("", Show::default());
        assert_eq!(all.len(), known_parameters().len());
        assert!(all.contains(&"queue_directory = /var/spool/mailroom".to_string()));
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
    }

    #[test]
    fn unknown_names_suggest_a_spelling() {
        let show = Show {
            names: vec!["mydestinaton".into()],
            ..Show::default()
        };
        let err = render(&config(""), &show, &mut |_| {}).unwrap_err();
        assert_eq!(err.code(), 64);
        assert!(err.message.contains("did you mean \"mydestination\"?"));
        // A name the file sets is shown even when mailroom does not know it.
        let show = Show {
            names: vec!["foo".into()],
            ..Show::default()
        };
        assert_eq!(lines("foo = 1\n", show), ["foo = 1"]);
    }
}
