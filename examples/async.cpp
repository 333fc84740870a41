// Three ways to wait for a write: block, continue in a callback, or co_await.
#include <pmap/pmap.hpp>

#include <coroutine>
#include <future>
#include <iostream>
#include <string>

// A minimal fire-and-forget coroutine type (use your framework's task type).
struct Task {
  struct promise_type {
    Task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

Task rename_user(pmap::PersistentMap<std::string, std::string>& users, std::promise<void>& done) {
  auto old = co_await users.insert("u1", "Grace");  // resumes once it is durable
  std::cout << "renamed " << old.value_or("nobody") << " to Grace\n";
  done.set_value();
}

int main() {
  pmap::PersistentMap<std::string, std::string> users{pmap::SqliteBackend("async.db")};

  // 1. Block until durable.
  users.insert("u1", "Ada").get();

  // 2. A callback on the map's completion thread (never the caller's, never the writer's).
  std::promise<void> logged;
  users.insert("u2", "Alan").then([&](pmap::Future<std::optional<std::string>>&& f) {
    try {
      f.get();
      std::cout << "u2 is on disk\n";
    } catch (const pmap::Error& e) {
      std::cout << "u2 failed: " << e.what() << "\n";
    }
    logged.set_value();
  });
  logged.get_future().wait();

  // 3. co_await in a coroutine.
  std::promise<void> renamed;
  rename_user(users, renamed);
  renamed.get_future().wait();
}
