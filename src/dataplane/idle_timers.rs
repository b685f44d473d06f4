//! Coarse deadlines for the worker's connections, fired by its 50 ms ticker, and the worker's
//! cached clock.
//!
//! A monoio `Sleep` is 640 bytes, reads the clock when created and goes through the timer
//! wheel; the request path arms several deadlines per request, nearly all of which are disarmed
//! before they fire. A deadline here is a slot in a vector (taken and freed in O(1), no heap
//! traffic once warm) plus a 40-byte future, measured against a clock read once per request.
//! Keep-alive, header and I/O deadlines do not need better than tick precision.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

pub struct IdleTimers {
    slots: RefCell<Vec<Slot>>,
    /// Head of the free-slot list (`u32::MAX`: none).
    free: Cell<u32>,
    /// The worker's clock as last read by [`IdleTimers::refresh`] or the ticker.
    now: Cell<Instant>,
    /// The clock of the last [`IdleTimers::fire`]: every slot with a deadline at or before it
    /// was freed by that fire (a timer only arms while its deadline is still ahead of `now`).
    fired_until: Cell<Instant>,
}

enum Slot {
    Armed { deadline: Instant, waker: Waker },
    Free { next: u32 },
}

const NONE: u32 = u32::MAX;

impl Default for IdleTimers {
    fn default() -> Self {
        IdleTimers {
            slots: RefCell::default(),
            free: Cell::new(NONE),
            now: Cell::new(Instant::now()),
            fired_until: Cell::new(Instant::now()),
        }
    }
}

impl IdleTimers {
    /// Completes at the first tick at or after `deadline`.
    pub fn until(&self, deadline: Instant) -> IdleTimer<'_> {
        IdleTimer {
            timers: self,
            deadline,
            slot: NONE,
        }
    }

    /// Run `f` until it completes (`Some`) or `deadline` passes (`None`; `f` is dropped, which
    /// cancels its I/O). `f` is polled first, so a finished operation always wins.
    pub fn within<F: Future>(&self, deadline: Instant, f: F) -> Within<'_, F> {
        Within {
            f,
            timer: self.until(deadline),
        }
    }

    /// Run `f` with a deadline `limit` from the cached clock; `None` when it passed.
    pub fn timed<F: Future>(&self, limit: std::time::Duration, f: F) -> Within<'_, F> {
        self.within(self.now() + limit, f)
    }

    /// The cached clock: at most one tick old, or fresher after [`IdleTimers::refresh`].
    pub fn now(&self) -> Instant {
        self.now.get()
    }

    /// Read the clock and cache it (once per request: deadlines are derived from it).
    pub fn refresh(&self) -> Instant {
        let now = Instant::now();
        self.now.set(now);
        now
    }

    /// Wake every timer whose deadline has passed (called from the worker's ticker).
    pub fn fire(&self, now: Instant) {
        self.now.set(now);
        self.fired_until.set(now);
        let mut due = Vec::new();
        {
            let mut slots = self.slots.borrow_mut();
            for (i, slot) in slots.iter_mut().enumerate() {
                if matches!(slot, Slot::Armed { deadline, .. } if *deadline <= now) {
                    let was = std::mem::replace(
                        slot,
                        Slot::Free {
                            next: self.free.get(),
                        },
                    );
                    self.free.set(i as u32);
                    if let Slot::Armed { waker, .. } = was {
                        due.push(waker);
                    }
                }
            }
        }
        // Woken outside the borrow: a waker may run code that arms a new timer.
        for waker in due {
            waker.wake();
        }
    }

    fn arm(&self, deadline: Instant, waker: Waker) -> u32 {
        let mut slots = self.slots.borrow_mut();
        let armed = Slot::Armed { deadline, waker };
        match self.free.get() {
            NONE => {
                slots.push(armed);
                (slots.len() - 1) as u32
            }
            i => {
                if let Slot::Free { next } = slots[i as usize] {
                    self.free.set(next);
                }
                slots[i as usize] = armed;
                i
            }
        }
    }

    /// Whether an armed timer with this deadline still holds its slot (a fire frees it).
    fn holds_slot(&self, deadline: Instant) -> bool {
        deadline > self.fired_until.get()
    }

    fn disarm(&self, i: u32) {
        let mut slots = self.slots.borrow_mut();
        slots[i as usize] = Slot::Free {
            next: self.free.get(),
        };
        self.free.set(i);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let slots = self.slots.borrow();
        slots
            .iter()
            .filter(|s| matches!(s, Slot::Armed { .. }))
            .count()
    }
}

pin_project_lite::pin_project! {
    /// An operation raced against a deadline ([`IdleTimers::within`]).
    pub struct Within<'a, F> {
        #[pin]
        f: F,
        timer: IdleTimer<'a>,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.f.poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::new(this.timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub struct IdleTimer<'a> {
    timers: &'a IdleTimers,
    deadline: Instant,
    /// The armed slot, `NONE` before the first poll and once fired.
    slot: u32,
}

impl Future for IdleTimer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let t = self.timers;
        if t.now() >= self.deadline {
            if self.slot != NONE && t.holds_slot(self.deadline) {
                t.disarm(self.slot);
            }
            self.slot = NONE;
            return Poll::Ready(());
        }
        if self.slot == NONE {
            self.slot = t.arm(self.deadline, cx.waker().clone());
            return Poll::Pending;
        }
        let mut slots = t.slots.borrow_mut();
        match &mut slots[self.slot as usize] {
            Slot::Armed { waker, .. } => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
                Poll::Pending
            }
            // Not reached: a fire that freed the slot also moved the clock past the deadline.
            Slot::Free { .. } => {
                drop(slots);
                self.slot = NONE;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for IdleTimer<'_> {
    fn drop(&mut self) {
        if self.slot != NONE && self.timers.holds_slot(self.deadline) {
            self.timers.disarm(self.slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn due_timers_fire_and_dropped_ones_leave_no_entry() {
        let timers = IdleTimers::default();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let now = Instant::now();
        let mut soon = Box::pin(timers.until(now + Duration::from_millis(20)));
        let mut later = Box::pin(timers.until(now + Duration::from_secs(60)));
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        assert!(later.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.len(), 2);
        timers.fire(now + Duration::from_millis(30));
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "only the due timer is woken"
        );
        std::thread::sleep(Duration::from_millis(25));
        assert!(soon.as_mut().poll(&mut cx).is_ready());
        drop(later);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn a_fired_timer_dropped_late_never_frees_the_slot_someone_else_took() {
        let timers = IdleTimers::default();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let now = Instant::now();
        let mut fired = Box::pin(timers.until(now + Duration::from_millis(10)));
        assert!(fired.as_mut().poll(&mut cx).is_pending());
        timers.fire(now + Duration::from_millis(20));
        // The freed slot goes to the next timer armed...
        let mut next = Box::pin(timers.until(now + Duration::from_secs(60)));
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.len(), 1);
        // ...and the fired timer's late poll and drop leave it alone.
        assert!(fired.as_mut().poll(&mut cx).is_ready());
        drop(fired);
        assert_eq!(timers.len(), 1, "the other timer's slot is still armed");
        timers.fire(now + Duration::from_secs(61));
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "and it still fires");
    }

    #[test]
    fn within_gives_the_result_or_none_once_the_deadline_fired() {
        let timers = IdleTimers::default();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let now = timers.refresh();
        let ready = timers.within(now + Duration::from_secs(1), std::future::ready(7));
        assert_eq!(Box::pin(ready).as_mut().poll(&mut cx), Poll::Ready(Some(7)));
        let mut stuck =
            Box::pin(timers.within(now + Duration::from_millis(5), std::future::pending::<()>()));
        assert!(stuck.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.len(), 1);
        timers.fire(now + Duration::from_millis(10));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(stuck.as_mut().poll(&mut cx), Poll::Ready(None));
        assert_eq!(timers.len(), 0);
    }
}
