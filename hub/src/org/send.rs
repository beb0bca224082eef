//! The send check: whether a user may address a recipient (an account, a line, a group) with a
//! given `from`, and where the sender's side is mirrored; and the shared-line receipt rule.

use crate::org::{OrgState, Right, Role, Status, Unit, keys};

/// Where the sender's side of a message is mirrored, so the sender's other devices (or
/// colleagues, for a line) show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mirror<'a> {
    /// The sender's own queue.
    Sender,
    /// The queue of the line the message was sent as.
    Line(&'a str),
    /// Nowhere: the sender reads the recipient line itself.
    None,
}

/// Why a send is refused by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefusal {
    /// The envelope is inconsistent (`from` neither the sender nor a line).
    Invalid(String),
    /// A rule refused it; the text names the rule.
    NotAllowed(String),
    /// The sender holds a key for the line that no longer works; the refusal is logged.
    KeyRefused {
        /// The key.
        key: u64,
        /// Why it no longer works.
        why: String,
    },
}

impl OrgState {
    /// Checks a send by `sender` (an account) with `from` and `to`, `as_line` when the envelope
    /// has the AS_LINE flag. Lock-free on a snapshot and allocation-free when allowed.
    pub fn check_send<'a>(
        &'a self,
        sender: &str,
        from: &'a str,
        to: &str,
        as_line: bool,
    ) -> Result<Mirror<'a>, SendRefusal> {
        self.check_send_at(sender, from, to, as_line, crate::store::system_clock_ms())
    }

    /// [`OrgState::check_send`] at the time `now` (Unix milliseconds; keys expire).
    pub fn check_send_at<'a>(
        &'a self,
        sender: &str,
        from: &'a str,
        to: &str,
        as_line: bool,
        now: u64,
    ) -> Result<Mirror<'a>, SendRefusal> {
        let mirror = self.check_from(sender, from, as_line)?;
        self.check_guest(sender, to)?;
        if let Some(group) = self.groups.get(to) {
            self.check_group_send(sender, group)?;
            // A reader of the group gets it from the group's queue.
            if !as_line && self.group_readers(to).contains(sender) {
                return Ok(Mirror::None);
            }
            return Ok(mirror);
        }
        match self.line(to) {
            Some(unit) => self.check_line_send(sender, unit, as_line, now, mirror),
            None => Ok(mirror),
        }
    }

    /// `from` must be the sender, or with AS_LINE a line of which the sender is an active
    /// member holding the right; the copy then goes to that line.
    fn check_from<'a>(
        &self,
        sender: &str,
        from: &'a str,
        as_line: bool,
    ) -> Result<Mirror<'a>, SendRefusal> {
        if !as_line {
            if from != sender {
                return Err(SendRefusal::Invalid(format!(
                    "from is {from}, but this device belongs to {sender}"
                )));
            }
            return Ok(Mirror::Sender);
        }
        let Some(unit) = self.line(from) else {
            return Err(SendRefusal::Invalid(format!(
                "{from} is not a line; AS_LINE needs a line in from"
            )));
        };
        let allowed = self.member(unit.org, sender).is_some_and(|m| {
            m.status == Status::Active && m.unit == Some(unit.id) && m.role.has(Right::SendAsLine)
        });
        if !allowed {
            return Err(SendRefusal::NotAllowed(format!(
                "rule: only active members of {} send as its line",
                unit.address
            )));
        }
        Ok(Mirror::Line(from))
    }

    /// Someone who is only a guest (of one or more organisations) answers only whoever invited
    /// them.
    fn check_guest(&self, sender: &str, to: &str) -> Result<(), SendRefusal> {
        let Some(orgs) = self.by_user.get(sender) else { return Ok(()) };
        let (mut any, mut invited_by_target) = (false, false);
        for member in orgs.iter().filter_map(|o| self.member(*o, sender)) {
            any = true;
            if member.role != Role::Guest && member.status == Status::Active {
                return Ok(());
            }
            invited_by_target |= member.invited_by.as_deref() == Some(to);
        }
        if any && !invited_by_target {
            return Err(SendRefusal::NotAllowed(
                "rule: a guest answers only the member or unit that invited them".into(),
            ));
        }
        Ok(())
    }

    /// A department line takes messages from members of its organisation and from holders of
    /// a working key; the main line from anyone. A member of the line's unit reads the line,
    /// so gets no separate copy.
    fn check_line_send<'a>(
        &self,
        sender: &str,
        unit: &Unit,
        as_line: bool,
        now: u64,
        mirror: Mirror<'a>,
    ) -> Result<Mirror<'a>, SendRefusal> {
        let member = self
            .member(unit.org, sender)
            .filter(|m| m.status == Status::Active && m.role.has(Right::Send));
        let is_main_line = self.orgs.get(&unit.org).is_some_and(|o| o.root == unit.id);
        if member.is_none() && !is_main_line {
            return match self.check_key(sender, unit.id, now) {
                keys::KeyCheck::Open => Ok(mirror),
                keys::KeyCheck::Refused { key, why } => {
                    Err(SendRefusal::KeyRefused { key, why: why.to_string() })
                }
                keys::KeyCheck::None => Err(SendRefusal::NotAllowed(format!(
                    "rule: the department line {} takes messages from members of its organisation",
                    unit.address
                ))),
            };
        }
        if !as_line && member.is_some_and(|m| m.unit == Some(unit.id)) {
            return Ok(Mirror::None);
        }
        Ok(mirror)
    }

    /// Whether `user` reads the line `line` (and so may make receipts by it, which the line's
    /// other members see: the shared receipt).
    pub fn reads_line(&self, user: &str, line: &str) -> bool {
        self.line(line)
            .is_some_and(|unit| self.lines_of(unit.org, user).iter().any(|u| u.id == unit.id))
    }
}
