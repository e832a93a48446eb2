#include "tide/io/pickle.h"

#include <cstring>
#include <set>
#include <unordered_map>

#include "tide/runtime/error.h"

namespace tide::io {
namespace {
using Kind = PickleValue::Kind;

PickleRef make(Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}
PickleRef make_int(int64_t i) {
  auto v = make(Kind::kInt);
  v->integer = i;
  return v;
}
PickleRef make_text(Kind kind, std::string s) {
  auto v = make(kind);
  v->text = std::move(s);
  return v;
}

// Globals that are called (REDUCE / NEWOBJ) for their result.
const std::set<std::string> kRebuildFunctions = {
    "collections.OrderedDict",        "torch._utils._rebuild_tensor_v2",  "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2", "torch.Size", "builtins.set", "__builtin__.set",
    // libtorch's own pickler (torch::pickle_save, TorchScript) tags typed containers; the value is the argument.
    "torch.jit._pickle.restore_type_tag", "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_doublelist",
    "torch.jit._pickle.build_boollist", "torch.jit._pickle.build_tensorlist"};
// Globals that only name something: storage types and tensor classes.
const std::set<std::string> kNames = {
    "torch.FloatStorage", "torch.HalfStorage",  "torch.BFloat16Storage", "torch.DoubleStorage", "torch.LongStorage",
    "torch.IntStorage",   "torch.ShortStorage", "torch.CharStorage",     "torch.ByteStorage",   "torch.BoolStorage",
    "torch.Tensor",       "torch.nn.parameter.Parameter", "torch.float32", "torch.float16", "torch.bfloat16"};
// Classes found in checkpoints and embeddings, kept as inert objects with their state.
const std::set<std::string> kInertClasses = {
    "torch.nn.modules.container.ParameterDict", "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "numpy.core.multiarray.scalar",             "numpy.dtype",
    "_codecs.encode",                           "argparse.Namespace",
    "torch.torch_version.TorchVersion"};

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const PersistentLoad& persistent_load, const std::string& where)
      : p_(data), end_(data + size), begin_(data), persistent_load_(persistent_load), where_(where) {}

  PickleRef run() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                               // PROTO
        case 0x95: bytes(8); break;                             // FRAME: length only
        case '.': return pop();                                 // STOP
        case '(': marks_.push_back(stack_.size()); break;       // MARK
        case 'N': push(make(Kind::kNone)); break;
        case 0x88: case 0x89: {                                 // NEWTRUE, NEWFALSE
          auto v = make(Kind::kBool);
          v->integer = op == 0x88;
          push(v);
          break;
        }
        case 'J': push(make_int(static_cast<int32_t>(uint_le(4)))); break;  // BININT
        case 'K': push(make_int(uint_le(1))); break;                        // BININT1
        case 'M': push(make_int(uint_le(2))); break;                        // BININT2
        case 0x8a: push(make_int(long_le(uint_le(1)))); break;              // LONG1
        case 0x8b: push(make_int(long_le(uint_le(4)))); break;              // LONG4
        case 'G': {                                                        // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | byte();
          auto v = make(Kind::kFloat);
          std::memcpy(&v->number, &bits, 8);
          push(v);
          break;
        }
        case 'X': push(make_text(Kind::kString, string(uint_le(4)))); break;     // BINUNICODE
        case 0x8c: push(make_text(Kind::kString, string(uint_le(1)))); break;    // SHORT_BINUNICODE
        case 0x8d: push(make_text(Kind::kString, string(uint_le(8)))); break;    // BINUNICODE8
        case 'T': push(make_text(Kind::kString, string(uint_le(4)))); break;     // BINSTRING
        case 'U': push(make_text(Kind::kString, string(uint_le(1)))); break;     // SHORT_BINSTRING
        case 'B': push(make_text(Kind::kBytes, string(uint_le(4)))); break;      // BINBYTES
        case 'C': push(make_text(Kind::kBytes, string(uint_le(1)))); break;      // SHORT_BINBYTES
        case 0x8e: push(make_text(Kind::kBytes, string(uint_le(8)))); break;     // BINBYTES8
        case '}': push(make(Kind::kDict)); break;                                // EMPTY_DICT
        case ']': push(make(Kind::kList)); break;                                // EMPTY_LIST
        case ')': push(make(Kind::kTuple)); break;                               // EMPTY_TUPLE
        case 0x8f: push(make(Kind::kList)); break;                               // EMPTY_SET (as a list)
        case 't': {                                                              // TUPLE
          auto v = make(Kind::kTuple);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {                                       // TUPLE1..3
          auto v = make(Kind::kTuple);
          v->items.resize(op - 0x84);
          for (size_t k = v->items.size(); k-- > 0;) v->items[k] = pop();
          push(v);
          break;
        }
        case 'l': {                                                              // LIST
          auto v = make(Kind::kList);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {                                                              // DICT
          auto v = make(Kind::kDict);
          set_items(*v, pop_mark());
          push(v);
          break;
        }
        case 'a': {                                                              // APPEND
          auto item = pop();
          container(top(), Kind::kList).items.push_back(item);
          break;
        }
        case 'e': case 0x90: {                                                   // APPENDS, ADDITEMS
          auto items = pop_mark();
          auto& list = container(top(), Kind::kList).items;
          list.insert(list.end(), items.begin(), items.end());
          break;
        }
        case 's': {                                                              // SETITEM
          auto value = pop();
          auto key = pop();
          set_items(container(top(), Kind::kDict), {key, value});
          break;
        }
        case 'u': {                                                              // SETITEMS
          auto items = pop_mark();
          set_items(container(top(), Kind::kDict), items);
          break;
        }
        case 'q': memo_[uint_le(1)] = top(); break;                              // BINPUT
        case 'r': memo_[uint_le(4)] = top(); break;                              // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;                           // MEMOIZE
        case 'h': push(memo(uint_le(1))); break;                                 // BINGET
        case 'j': push(memo(uint_le(4))); break;                                 // LONG_BINGET
        case '0': pop(); break;                                                  // POP
        case '1': pop_mark(); break;                                             // POP_MARK
        case '2': push(top()); break;                                            // DUP
        case 'c': {                                                              // GLOBAL "module\nname\n"
          std::string module = line(), name = line();
          push(global(module + "." + name));
          break;
        }
        case 0x93: {                                                             // STACK_GLOBAL
          auto name = pop(), module = pop();
          if (!name->is(Kind::kString) || !module->is(Kind::kString)) fail("STACK_GLOBAL needs two strings");
          push(global(module->text + "." + name->text));
          break;
        }
        case 'Q': {                                                              // BINPERSID
          auto pid = pop();
          if (!persistent_load_) fail("a persistent id, but this file has no storages");
          push(persistent_load_(*pid));
          break;
        }
        case 'R': {                                                              // REDUCE
          auto args = pop();
          auto callable = pop();
          push(call(*callable, *args));
          break;
        }
        case 0x81: {                                                             // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(call(*cls, *args));
          break;
        }
        case 'b': {                                                              // BUILD
          auto state = pop();
          PickleValue& target = *top();
          if (target.is(Kind::kObject)) target.state = state;
          // Dicts and tensors: the state is a __dict__ or backward hooks, not needed to read the data.
          break;
        }
        default:
          fail("unsupported pickle opcode 0x" + hex(op) + " (torch.save files use a small set of them)");
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(where_ + ": " + what + " at byte " + std::to_string(p_ - begin_));
  }
  static std::string hex(uint8_t b) {
    const char* digits = "0123456789abcdef";
    return std::string{digits[b >> 4], digits[b & 15]};
  }
  uint8_t byte() {
    if (p_ >= end_) fail("the pickle ends early");
    return *p_++;
  }
  const uint8_t* bytes(uint64_t n) {
    if (n > static_cast<uint64_t>(end_ - p_)) fail("the pickle ends early");
    const uint8_t* at = p_;
    p_ += n;
    return at;
  }
  uint64_t uint_le(int n) {
    const uint8_t* b = bytes(n);
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | b[k];
    return v;
  }
  // A little-endian two's-complement integer of n bytes (LONG1 / LONG4).
  int64_t long_le(uint64_t n) {
    if (n > 8) fail("an integer of " + std::to_string(n) + " bytes");
    if (n == 0) return 0;
    const uint8_t* b = bytes(n);
    uint64_t v = 0;
    for (uint64_t k = n; k-- > 0;) v = (v << 8) | b[k];
    if (n < 8 && (b[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);
    return static_cast<int64_t>(v);
  }
  std::string string(uint64_t n) {
    const uint8_t* b = bytes(n);
    return std::string(reinterpret_cast<const char*>(b), n);
  }
  std::string line() {
    std::string s;
    for (uint8_t c = byte(); c != '\n'; c = byte()) {
      s += static_cast<char>(c);
      if (s.size() > 256) fail("a global name longer than 256 bytes");
    }
    return s;
  }
  void push(PickleRef v) {
    if (stack_.size() > (1u << 24)) fail("a pickle stack deeper than 16M entries");
    stack_.push_back(std::move(v));
  }
  PickleRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) fail("the pickle stack is empty");
    PickleRef v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  const PickleRef& top() {
    if (stack_.empty()) fail("the pickle stack is empty");
    return stack_.back();
  }
  std::vector<PickleRef> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }
  PickleRef memo(uint64_t index) {
    const auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    return it->second;
  }
  PickleValue& container(const PickleRef& v, Kind kind) {
    if (!v->is(kind) && !(kind == Kind::kDict && v->is(Kind::kObject)))
      fail(kind == Kind::kList ? "APPEND to something that is not a list" : "SETITEM on something that is not a dict");
    if (v->is(Kind::kObject)) {  // e.g. an OrderedDict subclass: keep its items as its state
      if (!v->state) v->state = make(Kind::kDict);
      return *v->state;
    }
    return *v;
  }
  void set_items(PickleValue& dict, const std::vector<PickleRef>& kv) {
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    for (size_t k = 0; k < kv.size(); k += 2) dict.entries.emplace_back(kv[k], kv[k + 1]);
  }
  PickleRef global(const std::string& name) {
    if (!kRebuildFunctions.count(name) && !kNames.count(name) && !kInertClasses.count(name))
      fail("refusing the global '" + name + "': tide reads tensors, dicts and lists from torch files and never "
           "runs code they name");
    return make_text(Kind::kGlobal, name);
  }
  const PickleValue& arg(const PickleValue& args, size_t i, Kind kind, const char* what) {
    if (i >= args.items.size() || !args.items[i]->is(kind)) fail(std::string("bad ") + what + " in a tensor rebuild");
    return *args.items[i];
  }
  std::vector<int64_t> ints(const PickleValue& tuple, const char* what) {
    std::vector<int64_t> out;
    for (const auto& v : tuple.items) {
      if (!v->is(Kind::kInt) || v->integer < 0) fail(std::string("bad ") + what + " in a tensor rebuild");
      out.push_back(v->integer);
    }
    return out;
  }
  PickleRef rebuild_tensor(const PickleValue& args) {
    const PickleValue& storage = arg(args, 0, Kind::kStorage, "storage");
    const int64_t offset = arg(args, 1, Kind::kInt, "storage offset").integer;
    const auto size = ints(arg(args, 2, Kind::kTuple, "size"), "size");
    const auto stride = ints(arg(args, 3, Kind::kTuple, "stride"), "stride");
    if (size.size() != stride.size()) fail("size and stride of different lengths in a tensor rebuild");
    if (size.size() > 64) fail("a tensor of more than 64 dimensions");
    // The furthest element must lie inside the storage, and the tensor must not be absurdly large (a stride
    // of 0 repeats elements).
    const int64_t numel = storage.tensor.numel();
    int64_t last = offset, elements = 1;
    bool empty = false;
    for (size_t d = 0; d < size.size(); ++d) {
      if (size[d] == 0) empty = true;
      if (size[d] > (int64_t(1) << 40) || (elements > 0 && size[d] > (int64_t(1) << 40) / elements))
        fail("a tensor of more than 2^40 elements");
      elements *= size[d];
      if (size[d] > 1 && stride[d] > 0 && size[d] - 1 > (numel - 1) / stride[d])
        fail("a tensor reaches past the end of its storage");
      if (size[d] > 1) last += (size[d] - 1) * stride[d];
    }
    if (offset < 0 || (!empty && (offset >= numel || last >= numel)))
      fail("a tensor reaches past the end of its storage");
    auto v = make(Kind::kTensor);
    v->tensor = empty ? at::empty(size, storage.tensor.options()) : storage.tensor.as_strided(size, stride, offset);
    return v;
  }
  PickleRef call(const PickleValue& callable, const PickleValue& args) {
    if (!callable.is(Kind::kGlobal)) fail("a call of something that is not an allowed global");
    if (!args.is(Kind::kTuple)) fail("call arguments that are not a tuple");
    const std::string& f = callable.text;
    if (f == "collections.OrderedDict") return make(Kind::kDict);
    if (f == "builtins.set" || f == "__builtin__.set" || f == "torch.Size") {
      auto v = make(f == "torch.Size" ? Kind::kTuple : Kind::kList);
      if (!args.items.empty() && (args.items[0]->is(Kind::kList) || args.items[0]->is(Kind::kTuple)))
        v->items = args.items[0]->items;
      return v;
    }
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (args.items.empty() || !args.items[0]->is(Kind::kTensor)) fail("a parameter rebuilt from no tensor");
      return args.items[0];
    }
    if (f.rfind("torch.jit._pickle.", 0) == 0) {
      if (args.items.empty()) fail("'" + f + "' without its argument");
      return args.items[0];
    }
    if (f == "torch._tensor._rebuild_from_type_v2") {  // (function, type, args, state)
      if (args.items.size() < 3) fail("bad _rebuild_from_type_v2 arguments");
      return call(*args.items[0], *args.items[2]);
    }
    if (kInertClasses.count(f)) {
      auto v = make_text(Kind::kObject, f);
      v->items = args.items;
      return v;
    }
    fail("'" + f + "' cannot be called");
  }

  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* begin_;
  const PersistentLoad& persistent_load_;
  const std::string& where_;
  std::vector<PickleRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleRef> memo_;
};

}  // namespace

PickleRef PickleValue::find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k->is(Kind::kString) && k->text == key) return v;
  return nullptr;
}

PickleRef unpickle(const uint8_t* data, size_t size, const PersistentLoad& persistent_load, const std::string& where) {
  return Unpickler(data, size, persistent_load, where).run();
}

}  // namespace tide::io
