//! Per-group states kept as a guest's bytes, for the aggregates whose steps run in the sandbox:
//! a job's reduce (`job::plan`) and a session's `sql_aggregate!`s (`sql::functions::aggregate`).
//! The host keeps the states; a [`StateCalls`] turns a list of them plus rows (update) or other
//! states (merge) into new states in one guest call, and finishes them. The wire format is the
//! `sbx_sqlagg__*` one in `sandbox/ABI.md`; a job's fold takes its merge input.
//!
//! - [`GroupStates`], with `GROUP BY`: one call per input batch for all the groups it touches;
//! - [`OneState`], without (and in window functions): one call per batch for the one group.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, BooleanArray};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

use super::wire::{Reader, put_field};

/// The operations of a call (its input's first word).
pub(crate) const UPDATE: u32 = 0;
pub(crate) const MERGE: u32 = 1;
pub(crate) const FINISH: u32 = 2;

/// A group that has seen no row yet, sent (and returned) instead of a state's length.
pub(crate) const FRESH: u32 = u32::MAX;

/// About this many input bytes per merge call (more states to merge are sent in further calls,
/// each starting from the states the one before returned): keeps each call's input and output
/// well under the sandbox's memory and output caps.
pub(crate) const CALL_BYTES: usize = 4 << 20;

/// What runs an aggregate's steps on lists of states.
pub(crate) trait StateCalls: Send + Sync + 'static {
    /// The aggregate's name, for `Debug`.
    fn name(&self) -> &str;

    /// The states after the rows `pick` lists (none of them with a null argument) are added to
    /// `states`; `groups[i]` is the index in `states` of row `pick[i]` (`None`: one state).
    fn update(
        &self,
        states: &[Option<&[u8]>],
        columns: &[ArrayRef],
        rows: usize,
        pick: &[u32],
        groups: Option<&[u32]>,
    ) -> Result<NewStates>;

    /// The states after each `(index in states, other state)` of `others` is merged in.
    fn merge<'a>(&self, states: &[Option<&[u8]>], others: impl Iterator<Item = (u32, &'a [u8])>) -> Result<NewStates>;

    /// The groups' results, one row each.
    fn finish(&self, states: &[Option<&[u8]>]) -> Result<ArrayRef>;
}

/// Merges `others` into `states` through `call` (a merge input in, new states out), in as many
/// calls as keep each input near [`CALL_BYTES`].
pub(crate) fn merge_in_calls<'a>(
    states: &[Option<&[u8]>],
    others: impl Iterator<Item = (u32, &'a [u8])>,
    call: impl Fn(Vec<u8>) -> Result<NewStates>,
) -> Result<NewStates> {
    let mut others = others.peekable();
    let mut new = call(merge_input(states, &mut others))?;
    while others.peek().is_some() {
        let current: Vec<Option<&[u8]>> = (0..states.len()).map(|i| new.get(i)).collect();
        let input = merge_input(&current, &mut others);
        new = call(input)?;
    }
    Ok(new)
}

/// `u32 op = MERGE`, the states, `u32 n` and `n` of `others` as `u32 group` and a state: as many
/// as fit in [`CALL_BYTES`] (at least one).
fn merge_input<'a>(states: &[Option<&[u8]>], others: &mut impl Iterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
    let mut input = Vec::new();
    header(&mut input, MERGE, states);
    let count_at = input.len();
    input.extend_from_slice(&0u32.to_le_bytes());
    let mut n = 0u32;
    while n == 0 || input.len() < CALL_BYTES {
        let Some((group, state)) = others.next() else { break };
        input.extend_from_slice(&group.to_le_bytes());
        put_field(&mut input, state);
        n += 1;
    }
    input[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
    input
}

/// Reads `u32 n` and `n` states (`u32 len` and bytes, or `FRESH`) from an update or merge
/// output; the error says what is wrong with it.
pub(crate) fn read_states(bytes: Vec<u8>, expected: usize) -> Result<NewStates, String> {
    let mut reader = Reader::new(&bytes);
    let n = reader.word().ok_or_else(|| format!("is {} bytes, with no count", bytes.len()))? as usize;
    if n != expected {
        return Err(format!("has {n} states for {expected} groups"));
    }
    let spans = (0..n).map(|_| reader.state_span().ok_or("ends early")).collect::<Result<Vec<_>, _>>()?;
    if reader.left() > 0 {
        return Err(format!("has {} bytes after its states", reader.left()));
    }
    Ok(NewStates { bytes, spans })
}

/// An update or merge output: its bytes, and where each group's new state is in them.
#[derive(Debug)]
pub(crate) struct NewStates {
    bytes: Vec<u8>,
    /// Per group, (start, length) in `bytes`; `None` for a group still without rows.
    spans: Vec<Option<(usize, usize)>>,
}

impl NewStates {
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(at, len)| &self.bytes[at..at + len])
    }

    /// The bytes that are no state (counts and lengths).
    fn overhead(&self) -> usize {
        self.bytes.len() - self.spans.iter().flatten().map(|(_, len)| len).sum::<usize>()
    }
}

/// `u32 op, u32 groups`, then each state.
pub(crate) fn header(out: &mut Vec<u8>, op: u32, states: &[Option<&[u8]>]) {
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(&(states.len() as u32).to_le_bytes());
    states.iter().for_each(|s| put_state(out, *s));
}

/// `u32 len` and the bytes, or `FRESH` for a group with no rows yet.
pub(crate) fn put_state(out: &mut Vec<u8>, state: Option<&[u8]>) {
    match state {
        Some(bytes) => put_field(out, bytes),
        None => out.extend_from_slice(&FRESH.to_le_bytes()),
    }
}

/// The rows to send: those the filter keeps (all without one) whose arguments are all non-null.
pub(crate) fn picked(columns: &[ArrayRef], rows: usize, filter: Option<&BooleanArray>) -> Vec<u32> {
    let mut keep: Option<BooleanBuffer> = filter.map(|f| match f.nulls() {
        Some(nulls) => f.values() & nulls.inner(),
        None => f.values().clone(),
    });
    for nulls in columns.iter().filter_map(|c| c.logical_nulls()) {
        keep = Some(match keep {
            Some(keep) => &keep & nulls.inner(),
            None => nulls.into_inner(),
        });
    }
    match keep {
        Some(keep) => keep.set_indices().map(|row| row as u32).collect(),
        None => (0..rows as u32).collect(),
    }
}

/// The aggregate of one group (no `GROUP BY`, window functions).
pub(crate) struct OneState<C> {
    calls: Arc<C>,
    /// `None` until a row arrives.
    state: Option<Vec<u8>>,
}

impl<C> OneState<C> {
    pub(crate) fn new(calls: Arc<C>) -> Self {
        Self { calls, state: None }
    }
}

impl<C: StateCalls> std::fmt::Debug for OneState<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?} bytes)", self.calls.name(), self.state.as_ref().map(Vec::len))
    }
}

impl<C: StateCalls> Accumulator for OneState<C> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values.first().map_or(0, |v| v.len());
        let pick = picked(values, rows, None);
        if !pick.is_empty() {
            let new = self.calls.update(&[self.state.as_deref()], values, rows, &pick, None)?;
            self.state = new.get(0).map(<[u8]>::to_vec);
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let states = states[0].as_binary::<i32>();
        let others: Vec<(u32, &[u8])> = states.iter().flatten().map(|s| (0, s)).collect();
        if !others.is_empty() {
            let new = self.calls.merge(&[self.state.as_deref()], others.into_iter())?;
            self.state = new.get(0).map(<[u8]>::to_vec);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(self.state.clone())])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let column = self.calls.finish(&[self.state.as_deref()])?;
        ScalarValue::try_from_array(&column, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.state.as_ref().map_or(0, Vec::capacity)
    }
}

/// The aggregate of every group of a `GROUP BY`: their states by group index, back to back in
/// one buffer (a call replaces thousands of small states at once; one allocation per state would
/// cost more than the call).
pub(crate) struct GroupStates<C> {
    calls: Arc<C>,
    /// The states' bytes, with gaps where states were replaced.
    data: Vec<u8>,
    /// Per group, where its state is in `data` (`None` until a row arrives).
    spans: Vec<Option<Span>>,
    /// Bytes of `data` no span points at.
    garbage: usize,
    /// Scratch, as long as `spans`: a group's number in the current call, `u32::MAX` if none.
    slots: Vec<u32>,
}

/// Where a state is in [`GroupStates::data`].
#[derive(Debug, Clone, Copy)]
struct Span {
    at: usize,
    len: usize,
}

impl<C: StateCalls> GroupStates<C> {
    pub(crate) fn new(calls: Arc<C>) -> Self {
        Self { calls, data: Vec::new(), spans: Vec::new(), garbage: 0, slots: Vec::new() }
    }

    /// Numbers the distinct groups of `rows` in order of appearance: returns the groups and,
    /// per row, its group's number.
    fn number(&mut self, rows: impl Iterator<Item = usize>) -> (Vec<usize>, Vec<u32>) {
        let (mut groups, mut numbers) = (Vec::new(), Vec::new());
        for group in rows {
            let slot = &mut self.slots[group];
            if *slot == u32::MAX {
                *slot = groups.len() as u32;
                groups.push(group);
            }
            numbers.push(*slot);
        }
        groups.iter().for_each(|&g| self.slots[g] = u32::MAX);
        (groups, numbers)
    }

    /// Bytes of states held (garbage too), groups, and garbage bytes: for tests.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize, usize) {
        (self.data.len(), self.spans.len(), self.garbage)
    }

    fn grow(&mut self, total_num_groups: usize) {
        if self.spans.len() < total_num_groups {
            self.spans.resize(total_num_groups, None);
            self.slots.resize(total_num_groups, u32::MAX);
        }
    }

    fn bytes_of(&self, span: Option<Span>) -> Option<&[u8]> {
        span.map(|s| &self.data[s.at..s.at + s.len])
    }

    /// The states of `groups` as the next call sends them.
    fn current(&self, groups: &[usize]) -> Vec<Option<&[u8]>> {
        groups.iter().map(|&g| self.bytes_of(self.spans[g])).collect()
    }

    /// Keeps the new states of `groups`: the whole output is appended, and the old states
    /// become garbage, collected once it is half of the buffer.
    fn store(&mut self, groups: &[usize], new: NewStates) {
        let base = self.data.len();
        self.data.extend_from_slice(&new.bytes);
        self.garbage += new.overhead();
        for (&group, new) in groups.iter().zip(&new.spans) {
            let new = new.map(|(at, len)| Span { at: base + at, len });
            if let Some(old) = std::mem::replace(&mut self.spans[group], new) {
                self.garbage += old.len;
            }
        }
        if self.garbage > (1 << 20) && self.garbage > self.data.len() / 2 {
            self.compact();
        }
    }

    /// Copies the live states into a new buffer, in group order.
    fn compact(&mut self) {
        let mut data = Vec::with_capacity(self.data.len() - self.garbage);
        for span in self.spans.iter_mut().flatten() {
            let at = data.len();
            data.extend_from_slice(&self.data[span.at..span.at + span.len]);
            span.at = at;
        }
        self.data = data;
        self.garbage = 0;
    }

    /// Runs `f` on the states `emit_to` asks for, then forgets them.
    fn take<T>(&mut self, emit_to: EmitTo, f: impl FnOnce(&[Option<&[u8]>]) -> T) -> T {
        let taken = emit_to.take_needed(&mut self.spans);
        self.slots.truncate(self.spans.len());
        let states: Vec<Option<&[u8]>> = taken.iter().map(|&span| self.bytes_of(span)).collect();
        let out = f(&states);
        if self.spans.is_empty() {
            self.data.clear();
            self.garbage = 0;
        } else {
            self.garbage += taken.iter().flatten().map(|s| s.len).sum::<usize>();
        }
        out
    }
}

impl<C: StateCalls> GroupsAccumulator for GroupStates<C> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let pick = picked(values, group_indices.len(), opt_filter);
        if pick.is_empty() {
            return Ok(());
        }
        let (groups, numbers) = self.number(pick.iter().map(|&row| group_indices[row as usize]));
        let numbers = (groups.len() > 1).then_some(numbers.as_slice());
        let new = self.calls.update(&self.current(&groups), values, group_indices.len(), &pick, numbers)?;
        self.store(&groups, new);
        Ok(())
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        let others = values[0].as_binary::<i32>();
        let rows: Vec<usize> = (0..others.len()).filter(|&row| others.is_valid(row)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let (groups, numbers) = self.number(rows.iter().map(|&row| group_indices[row]));
        let pairs = numbers.into_iter().zip(rows.iter().map(|&row| others.value(row)));
        let new = self.calls.merge(&self.current(&groups), pairs)?;
        self.store(&groups, new);
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let calls = self.calls.clone();
        self.take(emit_to, |states| calls.finish(states))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let states = self.take(emit_to, |states| states.iter().copied().collect::<BinaryArray>());
        Ok(vec![Arc::new(states)])
    }

    /// Each row its own group (DataFusion skips partial aggregation when groups barely shrink):
    /// still one call for the whole batch.
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let rows = values.first().map_or(0, |v| v.len());
        let pick = picked(values, rows, opt_filter);
        let mut out = BinaryBuilder::with_capacity(rows, 0);
        if pick.is_empty() {
            (0..rows).for_each(|_| out.append_null());
            return Ok(vec![Arc::new(out.finish())]);
        }
        let fresh = vec![None; pick.len()];
        let numbers: Vec<u32> = (0..pick.len() as u32).collect();
        let numbers = (pick.len() > 1).then_some(numbers.as_slice());
        let new = self.calls.update(&fresh, values, rows, &pick, numbers)?;
        let mut next = pick.iter().enumerate().peekable();
        for row in 0..rows as u32 {
            match next.next_if(|(_, picked)| **picked == row) {
                Some((i, _)) => out.append_option(new.get(i)),
                None => out.append_null(),
            }
        }
        Ok(vec![Arc::new(out.finish())])
    }

    fn size(&self) -> usize {
        self.data.capacity()
            + self.spans.capacity() * std::mem::size_of::<Option<Span>>()
            + self.slots.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A merge call that adds `u64` states, as a guest's would: returns its output's states.
    fn add(input: &[u8], calls: &Cell<usize>) -> Result<NewStates> {
        calls.set(calls.get() + 1);
        let out = crate::job::fold_pairwise(input, |a, b| {
            let n = |s: &[u8]| u64::from_le_bytes(s[..8].try_into().unwrap());
            Ok((n(a) + n(b)).to_le_bytes().to_vec())
        })
        .unwrap();
        let groups = u32::from_le_bytes(input[4..8].try_into().unwrap()) as usize;
        Ok(read_states(out, groups).unwrap())
    }

    #[test]
    fn large_merges_go_in_several_calls_each_from_the_last_states() {
        // 3 groups, one fresh; 3 * 400 values of 8 KiB (only the first 8 bytes count) are about
        // 9.6 MB: three calls of about CALL_BYTES.
        let value = |i: u64| {
            let mut v = vec![0u8; 8 << 10];
            v[..8].copy_from_slice(&i.to_le_bytes());
            v
        };
        let values: Vec<Vec<u8>> = (0..1200).map(value).collect();
        let calls = Cell::new(0);
        let (one, two) = (5u64.to_le_bytes(), 7u64.to_le_bytes());
        let others = values.iter().enumerate().map(|(i, v)| ((i % 3) as u32, &v[..8]));
        let small = merge_in_calls(&[Some(&one), None, Some(&two)], others, |input| add(&input, &calls)).unwrap();
        assert_eq!(calls.replace(0), 1);
        let others = values.iter().enumerate().map(|(i, v)| ((i % 3) as u32, v.as_slice()));
        let large = merge_in_calls(&[Some(&one), None, Some(&two)], others, |input| {
            assert!(input.len() < CALL_BYTES + (8 << 10) + 64, "{} bytes", input.len());
            add(&input, &calls)
        });
        assert_eq!(calls.get(), 3);
        let sums = |s: &NewStates| -> Vec<u64> {
            (0..3).map(|g| u64::from_le_bytes(s.get(g).unwrap()[..8].try_into().unwrap())).collect()
        };
        let want =
            [5 + (0..1200).step_by(3).sum::<u64>(), (1..1200).step_by(3).sum(), 7 + (2..1200).step_by(3).sum::<u64>()];
        assert_eq!(sums(&small), want);
        assert_eq!(sums(&large.unwrap()), want);
    }

    #[test]
    fn outputs_may_keep_a_group_fresh_but_not_be_malformed() {
        let mut out = 2u32.to_le_bytes().to_vec();
        out.extend_from_slice(&FRESH.to_le_bytes());
        out.extend_from_slice(&[1, 0, 0, 0, 9]);
        let states = read_states(out.clone(), 2).unwrap();
        assert_eq!((states.get(0), states.get(1)), (None, Some(&[9u8][..])));
        assert_eq!(read_states(out.clone(), 3).unwrap_err(), "has 2 states for 3 groups");
        assert_eq!(read_states(out[..out.len() - 1].to_vec(), 2).unwrap_err(), "ends early");
        out.push(0);
        assert_eq!(read_states(out, 2).unwrap_err(), "has 1 bytes after its states");
    }
}
