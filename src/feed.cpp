// The watch feed. See pmap/detail/feed.hpp.
//
// Each subscription (Sub) has a queue of published batches and at most one
// drain task on the completion executor at a time (`scheduled`): the task
// delivers batches until the queue is empty, so calls never overlap, and
// records the thread it runs on, so that unsubscribe() can wait for a call
// on another thread and return at once from inside a call.

#include "pmap/detail/feed.hpp"

#include <absl/base/thread_annotations.h>

#include <deque>
#include <map>
#include <thread>

#include "errors.hpp"
#include "pmap/watch.hpp"
#include "sync.hpp"

namespace pmap {

void Subscription::reset() noexcept {
  if (feed_ && id_ != 0) feed_->unsubscribe(id_);
  feed_ = nullptr;
  id_ = 0;
}

namespace detail {

struct Feed::Sub {
  explicit Sub(Deliver d) : deliver(std::move(d)) {}
  const Deliver deliver;
  std::atomic<bool> active{true};
  Mutex mu;
  CondVar idle_cv;  // a call ended
  std::deque<std::shared_ptr<const Events>> queue ABSL_GUARDED_BY(mu);
  bool scheduled ABSL_GUARDED_BY(mu) = false;
  std::thread::id running ABSL_GUARDED_BY(mu);  // the thread inside a call, if any
};

struct Feed::Impl {
  std::shared_ptr<Completion> completion;
  Mutex mu;
  std::map<std::uint64_t, std::shared_ptr<Sub>> subs ABSL_GUARDED_BY(mu);
  std::uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
  bool closed ABSL_GUARDED_BY(mu) = false;
};

Feed::Feed() : impl_(std::make_unique<Impl>()) {}

void Feed::attach(std::shared_ptr<Completion> completion) noexcept {
  impl_->completion = std::move(completion);
}

Feed::~Feed() = default;

std::uint64_t Feed::subscribe(Deliver deliver) {
  MutexLock lock(impl_->mu);
  if (impl_->closed) return 0;
  const std::uint64_t id = impl_->next_id++;
  impl_->subs.emplace(id, std::make_shared<Sub>(std::move(deliver)));
  count_.fetch_add(1, std::memory_order_release);
  return id;
}

void Feed::unsubscribe(std::uint64_t id) noexcept {
  std::shared_ptr<Sub> sub;
  {
    MutexLock lock(impl_->mu);
    const auto it = impl_->subs.find(id);
    if (it == impl_->subs.end()) return;
    sub = std::move(it->second);
    impl_->subs.erase(it);
    count_.fetch_sub(1, std::memory_order_release);
  }
  sub->active.store(false);
  MutexLock lock(sub->mu);
  sub->queue.clear();
  const auto self = std::this_thread::get_id();
  while (sub->running != std::thread::id() && sub->running != self) sub->idle_cv.wait(sub->mu);
}

void Feed::close() noexcept {
  std::map<std::uint64_t, std::shared_ptr<Sub>> subs;
  {
    MutexLock lock(impl_->mu);
    impl_->closed = true;
    subs.swap(impl_->subs);
    count_.store(0, std::memory_order_release);
  }
  for (auto& [id, sub] : subs) sub->active.store(false);
}

void Feed::report(std::exception_ptr error) noexcept {
  impl_->completion->report(error, "a watch callback threw", Errc::backend);
}

void Feed::publish(Events events) {
  if (events.empty()) return;
  const auto batch = std::make_shared<const Events>(std::move(events));
  std::vector<std::shared_ptr<Sub>> subs;
  {
    MutexLock lock(impl_->mu);
    for (auto& [id, sub] : impl_->subs) subs.push_back(sub);
  }
  for (auto& sub : subs) {
    bool schedule;
    {
      MutexLock lock(sub->mu);
      sub->queue.push_back(batch);
      schedule = !sub->scheduled;
      sub->scheduled = true;
    }
    if (!schedule) continue;
    impl_->completion->post([sub] {
      for (;;) {
        std::shared_ptr<const Events> next;
        {
          MutexLock lock(sub->mu);
          if (sub->queue.empty() || !sub->active.load()) {
            sub->scheduled = false;
            sub->queue.clear();
            return;
          }
          next = std::move(sub->queue.front());
          sub->queue.pop_front();
          sub->running = std::this_thread::get_id();
        }
        sub->deliver(*next, sub->active);  // catches and reports per event
        {
          MutexLock lock(sub->mu);
          sub->running = std::thread::id();
        }
        sub->idle_cv.signal_all();
      }
    });
  }
}

}  // namespace detail
}  // namespace pmap
