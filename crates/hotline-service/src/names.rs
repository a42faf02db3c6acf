//! When a name passes for an enrolled official's: the matching behind the
//! impersonation guard ([`crate::Services::guard_name`]). Pure functions, no
//! store.
//!
//! **Normalisation** ([`tokens`]), in this order:
//! 1. NFKC (fullwidth and compatibility forms become plain letters, `ﬁ` is `fi`);
//! 2. a space between a lower-case letter and a following capital, so
//!    `MariaCastell` is two words;
//! 3. the Unicode TR39 confusable skeleton (`unicode-security`) of the text
//!    *as written*, before any case folding: capital `I` becomes `l`, `0`
//!    becomes `O`, `1` and `|` become `l`, Cyrillic and Greek look-alikes
//!    become Latin, invisible (default-ignorable) characters go;
//! 4. accents (combining marks) removed, then lower case, then the skeleton
//!    again (lower-case `m` is `rn` in TR39, capital `M` is not), accents
//!    and case again;
//! 5. `i` becomes `l`: TR39 makes capital `I` an `l`, so once case no longer
//!    counts, `i`, `I`, `l`, `1` and `|` are one letter;
//! 6. split into words on anything that is not a letter or digit (spaces,
//!    `.`, `_`, `-`, `@`, `:`, punctuation).
//!
//! **Matching** ([`impersonates`]): a text passes for an official when
//! - after dropping title words ([`TITLES`]: "President", "H.E.", "Dr", ...)
//!   from both, some run of the text's consecutive words, joined, equals the
//!   official's name words joined (also in reverse order, "Castell, Maria").
//!   A run starts and ends at word boundaries, or next to a title glued to
//!   the name ("PresidentMariaCastell"): "Maria Castell" is in "President
//!   Maria Castell", "Maria.Castell@gov" and "MariaCastell", but not in
//!   "Maria Castellano" or "Mariana Castell";
//! - or it names the official's user id: its words (titles kept), joined,
//!   equal the user id's localpart joined, or some run of them equals the
//!   localpart followed by the server name (`@president.avalon:gov.example`),
//!   or, for a localpart of two words or more (`president.avalon`), the
//!   localpart alone. A one-word localpart (`macron`) is refused only as the
//!   whole text or with its server: as one word among others it is a
//!   surname shared with many.
//!
//! Usernames ([`impersonates_username`]) are also refused when their
//! skeleton (all words joined) equals the official's name's.

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;

/// Title and honorific words dropped from names before matching, as
/// written; each entry is normalised like a name, so "H.E." is the words
/// `h`, `e`. Dropping more only ever lets more names match.
pub const TITLES: &[&str] = &[
    "president",
    "vice president",
    "president elect",
    "presidente",
    "prime minister",
    "deputy prime minister",
    "premier",
    "chancellor",
    "vice chancellor",
    "minister",
    "foreign minister",
    "ministre",
    "ministro",
    "secretary",
    "secretary of state",
    "secretary general",
    "his excellency",
    "her excellency",
    "your excellency",
    "excellency",
    "h.e.",
    "his majesty",
    "her majesty",
    "majesty",
    "his highness",
    "her highness",
    "highness",
    "the honourable",
    "the honorable",
    "honourable",
    "honorable",
    "hon",
    "rt hon",
    "right honourable",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
    "lord",
    "lady",
    "madam",
    "madame",
    "mme",
    "monsieur",
    "herr",
    "frau",
    "senor",
    "senora",
    "senator",
    "sen",
    "representative",
    "rep",
    "congressman",
    "congresswoman",
    "governor",
    "mayor",
    "ambassador",
    "amb",
    "envoy",
    "consul",
    "commissioner",
    "chairman",
    "chairwoman",
    "chair",
    "general",
    "admiral",
    "king",
    "queen",
    "prince",
    "princess",
    "emperor",
    "empress",
    "sultan",
    "sheikh",
    "emir",
];

/// Step 1–5 of the normalisation for one piece of text (no word split).
fn fold(piece: &str) -> String {
    let strip = |s: &str| -> String {
        s.nfd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .collect()
    };
    let first: String = unicode_security::confusable_detection::skeleton(piece).collect();
    let lower = strip(&first).to_lowercase();
    let second: String = unicode_security::confusable_detection::skeleton(&lower).collect();
    strip(&second)
        .to_lowercase()
        .chars()
        .map(|c| if c == 'i' { 'l' } else { c })
        .collect()
}

/// The normalised words of `text` (see the module docs), titles kept.
pub fn tokens(text: &str) -> Vec<String> {
    let nfkc: String = text.nfkc().collect();
    // A lower-case letter followed by a capital starts a new word.
    let mut spaced = String::with_capacity(nfkc.len() + 8);
    let mut prev_lower = false;
    for c in nfkc.chars() {
        if prev_lower && c.is_uppercase() {
            spaced.push(' ');
        }
        prev_lower = c.is_lowercase();
        spaced.push(c);
    }
    fold(&spaced)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The skeleton of `text` with separators removed: all its words joined.
pub fn skeleton(text: &str) -> String {
    tokens(text).concat()
}

/// [`TITLES`], normalised, longest first (so "prime minister" is dropped
/// whole before "minister").
fn titles() -> &'static [Vec<String>] {
    static TITLES_NORMALISED: std::sync::OnceLock<Vec<Vec<String>>> = std::sync::OnceLock::new();
    TITLES_NORMALISED.get_or_init(|| {
        let mut t: Vec<Vec<String>> = TITLES.iter().map(|t| tokens(t)).collect();
        t.sort_by_key(|w| std::cmp::Reverse(w.len()));
        t
    })
}

/// [`TITLES`], normalised, each as one word ("primeminister").
fn glued_titles() -> &'static [String] {
    static GLUED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    GLUED.get_or_init(|| titles().iter().map(|t| t.concat()).collect())
}

/// `words` without the title phrases in it.
fn drop_titles(words: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    'next: while i < words.len() {
        for title in titles() {
            if words[i..].starts_with(title) {
                i += title.len();
                continue 'next;
            }
        }
        out.push(words[i].clone());
        i += 1;
    }
    out
}

/// Whether some run of consecutive `words`, joined, equals `target`. With
/// `glued`, a run may also start just after, or end just before, a
/// title glued to a word ("presidentmariacastell").
fn contains_run(words: &[String], target: &str, glued: bool) -> bool {
    if target.is_empty() {
        return false;
    }
    let joined = words.concat();
    let mut bounds = Vec::with_capacity(words.len() + 1);
    bounds.push(0usize);
    for w in words {
        bounds.push(bounds.last().unwrap_or(&0) + w.len());
    }
    let mut starts: BTreeSet<usize> = bounds.iter().copied().collect();
    let mut ends: BTreeSet<usize> = bounds.into_iter().collect();
    if glued {
        let titles = glued_titles();
        // Titles may be chained ("hepresident"): follow each new position.
        // Sets keep this linear in the text's length, however long it is.
        let mut todo: Vec<usize> = starts.iter().copied().collect();
        while let Some(s) = todo.pop() {
            for t in titles {
                if joined[s..].starts_with(t.as_str()) && starts.insert(s + t.len()) {
                    todo.push(s + t.len());
                }
            }
        }
        let mut todo: Vec<usize> = ends.iter().copied().collect();
        while let Some(e) = todo.pop() {
            for t in titles {
                if joined[..e].ends_with(t.as_str()) && ends.insert(e - t.len()) {
                    todo.push(e - t.len());
                }
            }
        }
    }
    starts
        .iter()
        .any(|&s| joined[s..].starts_with(target) && ends.contains(&(s + target.len())))
}

/// An enrolled official's name and user id, normalised once.
#[derive(Clone, Debug)]
pub struct Official {
    /// The name's words without titles, joined.
    name: String,
    /// The same words in reverse order, joined ("Castell Maria").
    name_reversed: String,
    /// The localpart's words joined, and how many words it has.
    localpart: String,
    localpart_words: usize,
    /// The localpart's and server name's words joined.
    user_id: String,
}

impl Official {
    /// `user_id` is `@localpart:server` (a bare localpart is taken as is).
    pub fn new(name: &str, user_id: &str) -> Self {
        let words = drop_titles(&tokens(name));
        let id = user_id.strip_prefix('@').unwrap_or(user_id);
        let (local, server) = id.split_once(':').unwrap_or((id, ""));
        let local_words = tokens(local);
        let reversed: Vec<String> = words.iter().rev().cloned().collect();
        Official {
            name: words.concat(),
            name_reversed: if words.len() > 1 {
                reversed.concat()
            } else {
                String::new()
            },
            localpart: local_words.concat(),
            localpart_words: local_words.len(),
            // Without a server there is no user id to match beyond the localpart.
            user_id: if server.is_empty() {
                String::new()
            } else {
                format!("{}{}", local_words.concat(), skeleton(server))
            },
        }
    }
}

/// A name to check, normalised once for every official it is compared with.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// All words, titles kept.
    raw: Vec<String>,
    /// The words without titles.
    named: Vec<String>,
}

impl Candidate {
    pub fn new(text: &str) -> Self {
        let raw = tokens(text);
        let named = drop_titles(&raw);
        Candidate { raw, named }
    }
}

/// Whether `text` passes for `official` (see the module docs).
pub fn impersonates(text: &Candidate, official: &Official) -> bool {
    contains_run(&text.named, &official.name, true)
        || contains_run(&text.named, &official.name_reversed, true)
        || (!official.localpart.is_empty() && text.raw.concat() == official.localpart)
        || contains_run(&text.raw, &official.user_id, false)
        || (official.localpart_words > 1 && contains_run(&text.raw, &official.localpart, false))
}

/// Whether a username (a localpart) passes for `official`: what
/// [`impersonates`] refuses, and a skeleton equal to the name's skeleton.
pub fn impersonates_username(localpart: &str, official: &Official) -> bool {
    let text = Candidate::new(localpart);
    impersonates(&text, official)
        || (!official.name.is_empty() && text.raw.concat() == official.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASTELL: (&str, &str) = ("Maria Castell", "@president.avalon:gov.example");
    const MACRON: (&str, &str) = ("Emmanuel Macron", "@macron:gov.example");

    fn name_refused(text: &str, (name, id): (&str, &str)) -> bool {
        impersonates(&Candidate::new(text), &Official::new(name, id))
    }

    fn username_refused(localpart: &str, (name, id): (&str, &str)) -> bool {
        impersonates_username(localpart, &Official::new(name, id))
    }

    #[test]
    fn names_that_pass_for_an_official_are_refused() {
        for (text, official) in [
            // The name itself, in any case.
            ("Maria Castell", CASTELL),
            ("maria castell", CASTELL),
            ("MARIA CASTELL", CASTELL),
            ("mArIa cAsTeLl", CASTELL),
            // Capital I for l: the skeleton is taken before case folding.
            ("Maria CasteII", CASTELL),
            ("MarIa CasteII", CASTELL),
            // Digits for letters (TR39: 1 is l, 0 is O).
            ("Maria Caste11", CASTELL),
            ("Emmanuel Macr0n", MACRON),
            ("Emmanue1 Macron", MACRON),
            ("Maria Castel|", CASTELL),
            // Cyrillic and Greek look-alikes.
            ("\u{041C}\u{0430}ria \u{0421}\u{0430}st\u{0435}ll", CASTELL),
            ("Emmanuel Macr\u{043E}n", MACRON),
            ("\u{039C}\u{0391}RI\u{0391} CASTELL", CASTELL),
            // Fullwidth forms.
            ("\u{FF2D}\u{FF41}\u{FF52}\u{FF49}\u{FF41} \u{FF23}\u{FF41}\u{FF53}\u{FF54}\u{FF45}\u{FF4C}\u{FF4C}", CASTELL),
            // Accents, spacing and invisible characters.
            ("Maríá  Castéll", CASTELL),
            ("Mar\u{200B}ia Cas\u{00AD}tell", CASTELL),
            // Separators of any kind, or none.
            ("Maria.Castell", CASTELL),
            ("Maria_Castell", CASTELL),
            ("Maria-Castell", CASTELL),
            ("MariaCastell", CASTELL),
            ("mariacastell", CASTELL),
            ("Maria.Castell@gov", CASTELL),
            // Titles and other words around the name.
            ("President Maria Castell", CASTELL),
            ("H.E. Maria Castell", CASTELL),
            ("Her Excellency Maria Castell", CASTELL),
            ("Prime Minister Maria Castell", CASTELL),
            ("Dr. Maria Castell", CASTELL),
            ("PresidentMariaCastell", CASTELL),
            ("presidentmariacastell", CASTELL),
            ("Maria President Castell", CASTELL),
            ("The Real Maria Castell", CASTELL),
            ("Maria Castell (official)", CASTELL),
            ("Castell, Maria", CASTELL),
            // With case folded, i and l are one letter (MARIA is MARlA).
            ("Marla Castell", CASTELL),
            ("Emmanuel Marcon Fan Club for Emmanuel Macron", MACRON),
            // The user id, or its localpart.
            ("@president.avalon:gov.example", CASTELL),
            ("president_avalon", CASTELL),
            ("president.avalon", CASTELL),
            ("The President Avalon", CASTELL),
            ("President Avalon", CASTELL),
            ("presldent.ava1on", CASTELL),
            ("macron", MACRON),
            ("@macron:gov.example", MACRON),
            ("Macron@gov.example", MACRON),
            ("rnacron", MACRON),
        ] {
            assert!(name_refused(text, official), "{text:?} passes for {official:?}");
        }
    }

    #[test]
    fn different_names_that_only_look_close_are_allowed() {
        for (text, official) in [
            ("Maria Castellano", CASTELL),
            ("Mariana Castell", CASTELL),
            ("Annamaria Castell", CASTELL),
            ("Maria Castellanos-Ruiz", CASTELL),
            ("Maria", CASTELL),
            ("Castell", CASTELL),
            ("Maria C.", CASTELL),
            ("Maria Castello", CASTELL),
            ("Avalon", CASTELL),
            ("Emmanuel Marcon", MACRON),
            ("Emmanuel Marcon Fan Club", MACRON),
            ("Brigitte Macron", MACRON),
            ("Macronomics", MACRON),
            ("Emmanuelle Macronne", MACRON),
            ("", CASTELL),
            ("...", CASTELL),
        ] {
            assert!(
                !name_refused(text, official),
                "{text:?} refused for {official:?}"
            );
        }
    }

    #[test]
    fn usernames_whose_skeleton_is_an_officials_are_refused() {
        for (localpart, official) in [
            ("president.avalon", CASTELL),
            ("president_avalon", CASTELL),
            ("presldent.ava1on", CASTELL),
            ("president-avalon", CASTELL),
            ("presidentavalon", CASTELL),
            ("president.ava1on", CASTELL),
            ("maria.castell", CASTELL),
            ("mariacastell", CASTELL),
            ("rnaria_caste11", CASTELL),
            ("the.president.avalon", CASTELL),
            ("emmanuelmacron", MACRON),
            ("rnacron", MACRON),
            ("macr0n", MACRON),
        ] {
            assert!(username_refused(localpart, official), "{localpart:?}");
        }
        for (localpart, official) in [
            ("president.avalonia", CASTELL),
            ("maria.castellano", CASTELL),
            ("avalon", CASTELL),
            ("macron.fan", MACRON),
            ("mallory", MACRON),
        ] {
            assert!(!username_refused(localpart, official), "{localpart:?}");
        }
    }

    #[test]
    fn a_long_text_is_checked_in_linear_time() {
        let long = "Dr Mr ".repeat(10_000) + "Maria Castell";
        let started = std::time::Instant::now();
        assert!(name_refused(&long, CASTELL));
        assert!(!name_refused(&"drmr".repeat(20_000), CASTELL));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn the_normalisation_folds_case_after_the_skeleton() {
        // Capital I is l in TR39, lower-case m is rn: both sides agree.
        assert_eq!(skeleton("CasteII"), skeleton("Castell"));
        assert_eq!(skeleton("MARIA"), skeleton("maria"));
        assert_eq!(skeleton("Maria"), skeleton("rnaria"));
        assert_eq!(tokens("Maria.Castell@gov"), tokens("maria castell gov"));
        assert_eq!(tokens("MariaCastell"), tokens("Maria Castell"));
        assert_eq!(tokens("H.E.").len(), 2);
        assert_ne!(skeleton("Maria Castellano"), skeleton("Maria Castell"));
        assert!(tokens(" \u{200B}-_. ").is_empty());
    }

    #[test]
    fn titles_are_dropped_whole_and_never_leave_an_empty_official_matching_all() {
        assert_eq!(
            drop_titles(&tokens("Deputy Prime Minister Maria Castell")),
            tokens("maria castell")
        );
        assert_eq!(drop_titles(&tokens("Prime Minister")), Vec::<String>::new());
        // An official whose name is only a title matches no name by it.
        let only_title = Official::new("President", "@x.y:gov.example");
        assert!(!impersonates(
            &Candidate::new("President Smith"),
            &only_title
        ));
    }
}
