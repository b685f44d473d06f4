//! Coarse deadlines for idle keep-alive connections, fired by the worker's 50 ms ticker.
//!
//! A monoio `Sleep` is 640 bytes and would sit in every idle connection's task; an entry here
//! is a map slot plus a 32-byte future. Idle deadlines (the hot window, the keep-alive
//! timeout) do not need better than tick precision.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
pub struct IdleTimers {
    entries: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_id: Cell<u64>,
}

impl IdleTimers {
    /// Completes at the first tick at or after `deadline`.
    pub fn until(&self, deadline: Instant) -> IdleTimer<'_> {
        IdleTimer {
            timers: self,
            deadline,
            id: None,
        }
    }

    /// Wake every timer whose deadline has passed (called from the worker's ticker).
    pub fn fire(&self, now: Instant) {
        let due = {
            let mut entries = self.entries.borrow_mut();
            let later = entries.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *entries, later)
        };
        for (_, waker) in due {
            waker.wake();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }
}

pub struct IdleTimer<'a> {
    timers: &'a IdleTimers,
    deadline: Instant,
    id: Option<u64>,
}

impl Future for IdleTimer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let key = match self.id {
            Some(id) => (self.deadline, id),
            None => {
                let id = self.timers.next_id.get();
                self.timers.next_id.set(id.wrapping_add(1));
                self.id = Some(id);
                (self.deadline, id)
            }
        };
        let mut entries = self.timers.entries.borrow_mut();
        if Instant::now() >= self.deadline {
            entries.remove(&key);
            return Poll::Ready(());
        }
        match entries.get_mut(&key) {
            Some(w) if w.will_wake(cx.waker()) => {}
            Some(w) => *w = cx.waker().clone(),
            None => {
                entries.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for IdleTimer<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.timers
                .entries
                .borrow_mut()
                .remove(&(self.deadline, id));
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

    #[test]
    fn due_timers_fire_and_dropped_ones_leave_no_entry() {
        let timers = IdleTimers::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
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
}
