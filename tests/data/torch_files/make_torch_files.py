"""Writes small files in torch.save's format (a stored zip with archive/data.pkl and archive/data/<key>) without
torch: the pickles name the same globals torch's do. The unit tests read them with tide's restricted unpickler.

    python3 make_torch_files.py   # in this folder
"""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile


def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


torch = module("torch")
utils = module("torch._utils")
container = module("torch.nn.modules.container")
module("torch.nn")
module("torch.nn.modules")
callbacks = module("pytorch_lightning.callbacks.model_checkpoint")
module("pytorch_lightning")
module("pytorch_lightning.callbacks")
posix = sys.modules["posix"]


def named(mod, name, obj):
    obj.__module__ = mod.__name__
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(mod, name, obj)
    return obj


def _rebuild_tensor_v2(*args):
    raise RuntimeError("never called")


def _rebuild_parameter(*args):
    raise RuntimeError("never called")


named(utils, "_rebuild_tensor_v2", _rebuild_tensor_v2)
named(utils, "_rebuild_parameter", _rebuild_parameter)
FloatStorage = named(torch, "FloatStorage", type("FloatStorage", (), {}))
HalfStorage = named(torch, "HalfStorage", type("HalfStorage", (), {}))
ParameterDict = named(container, "ParameterDict", type("ParameterDict", (), {}))
ModelCheckpoint = named(callbacks, "ModelCheckpoint", type("ModelCheckpoint", (), {}))


class Storage:
    def __init__(self, key, kind, values):
        self.key, self.kind, self.values = key, kind, values

    def raw(self):
        fmt = "<%d%s" % (len(self.values), "f" if self.kind is FloatStorage else "e")
        return struct.pack(fmt, *self.values)


class Tensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.storage, self.offset, self.size, self.stride, self.parameter = storage, offset, size, stride, parameter

    def __reduce__(self):
        t = (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))
        if not self.parameter:
            return t
        return (_rebuild_parameter, (Rebuilt(t), True, collections.OrderedDict()))


class Rebuilt:
    def __init__(self, reduce_value):
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", len(obj.values))
        return None


def save(path, obj, storages, extra=None):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr("archive/data/" + s.key, s.raw())
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def instance(cls, state):
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


# A1111's embedding layout: 2 vectors of 4, values 0..7 / 8.
vec = Storage("0", FloatStorage, [i / 8 for i in range(8)])
save("a1111_embedding.pt", {"string_to_token": {"*": 265}, "string_to_param": {"*": Tensor(vec, 0, (2, 4), (4, 1), True)},
                            "name": "my-cat", "step": 100, "sd_checkpoint": None, "sd_checkpoint_name": None}, [vec])

# The original textual-inversion code: string_to_param is a torch.nn.ParameterDict.
vec = Storage("0", FloatStorage, [1.0, -2.0, 3.5])
params = instance(ParameterDict, {"training": True, "_parameters": collections.OrderedDict([("*", Tensor(vec, 0, (1, 3), (3, 1), True))])})
save("paramdict_embedding.pt", {"string_to_token": {"*": 265}, "string_to_param": params}, [vec])

# A checkpoint: the state dict under "state_dict", half and float tensors, a transposed view sharing its storage,
# a Lightning callback object beside it.
a = Storage("0", FloatStorage, [float(i) for i in range(6)])
b = Storage("1", HalfStorage, [0.5, 1.5, -2.0, 4.0])
state = collections.OrderedDict([("model.w", Tensor(a, 0, (2, 3), (3, 1))), ("model.w_t", Tensor(a, 0, (3, 2), (1, 3))),
                                  ("model.h", Tensor(b, 1, (3,), (1,))), ("model.s", Tensor(a, 5, (), ()))])
save("checkpoint.ckpt", {"state_dict": state, "global_step": 470000, "epoch": 6,
                         "callbacks": {"ModelCheckpoint": instance(ModelCheckpoint, {"monitor": None})}}, [a, b])

# A pickle that names os.system: must be refused, never called.
class Evil:
    def __reduce__(self):
        return (posix.system, ("echo never",))


save("evil.pt", {"x": Evil()}, [])
