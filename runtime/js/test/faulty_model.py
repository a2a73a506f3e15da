"""Write a copy of a kdedge v2 model.onnx whose outputs break the bundle contract (for test/outputs.test.mjs).

usage: python faulty_model.py SRC DST VARIANT
  p=VALUE          every probability is VALUE (e.g. 5, -0.5, nan)
  p=VALUE@CP       probabilities are VALUE only for a row holding code point CP (decimal), else the model's
  known+N          the `known` output plus N (N may be negative)
  transpose        probabilities [labels, batch] instead of [batch, labels]
  flat             probabilities [batch * labels] (a 1-D output)
"""
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper


def main(src: str, dst: str, variant: str) -> None:
    model = onnx.load(src)
    g = model.graph

    def rename_output(name: str, raw: str) -> None:
        for node in g.node:
            for i, o in enumerate(node.output):
                if o == name:
                    node.output[i] = raw
        for node in g.node:
            for i, x in enumerate(node.input):
                if x == name:
                    node.input[i] = raw

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    if variant.startswith("p="):
        value, _, cp = variant[2:].partition("@")
        rename_output("probabilities", "p_raw")
        v = const("fault_value", np.array(float(value), np.float32))
        if not cp:
            # p_raw * 0 + value would turn NaN-free rows into value; Where(true, value, p_raw) keeps shape
            g.node.extend([
                helper.make_node("Shape", ["p_raw"], ["fault_shape"]),
                helper.make_node("Expand", [v, "fault_shape"], ["probabilities"]),
            ])
        else:
            c = const("fault_cp", np.array(int(cp), np.int32))
            g.node.extend([
                helper.make_node("Equal", [g.input[0].name, c], ["fault_eq"]),
                helper.make_node("Cast", ["fault_eq"], ["fault_eq_f"], to=onnx.TensorProto.FLOAT),
                helper.make_node("ReduceMax", ["fault_eq_f"], ["fault_any"], keepdims=1,
                                 axes=[1]) if model.opset_import[0].version < 18 else
                helper.make_node("ReduceMax", ["fault_eq_f", const("fault_axes", np.array([1], np.int64))],
                                 ["fault_any"], keepdims=1),
                helper.make_node("Cast", ["fault_any"], ["fault_any_b"], to=onnx.TensorProto.BOOL),
                helper.make_node("Where", ["fault_any_b", v, "p_raw"], ["probabilities"]),
            ])
    elif variant.startswith("known"):
        n = int(variant[len("known"):])
        rename_output("known", "known_raw")
        g.node.append(helper.make_node("Add", ["known_raw", const("fault_n", np.array(n, np.int32))], ["known"]))
    elif variant == "transpose":
        rename_output("probabilities", "p_raw")
        g.node.append(helper.make_node("Transpose", ["p_raw"], ["probabilities"], perm=[1, 0]))
        out = next(o for o in g.output if o.name == "probabilities")
        out.type.tensor_type.shape.ClearField("dim")
    elif variant == "flat":
        rename_output("probabilities", "p_raw")
        g.node.append(helper.make_node("Reshape", ["p_raw", const("fault_flat", np.array([-1], np.int64))],
                                       ["probabilities"]))
        out = next(o for o in g.output if o.name == "probabilities")
        out.type.tensor_type.shape.ClearField("dim")
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    onnx.checker.check_model(model)
    onnx.save(model, dst)


if __name__ == "__main__":
    main(*sys.argv[1:])
