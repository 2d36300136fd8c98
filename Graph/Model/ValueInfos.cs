using OnnxKfac.Graph.Proto;

namespace OnnxKfac.Graph.Model;

/// <summary>Construction of <see cref="ValueInfoProto"/>s.</summary>
public static class ValueInfos
{
    /// <summary>A tensor value info; dimensions below zero (or a null shape) are left free.</summary>
    public static ValueInfoProto Tensor(string name, int elemType, IReadOnlyList<long>? shape, IReadOnlyList<string>? dimNames = null)
    {
        var tt = new TypeProto.Types.Tensor { ElemType = elemType };
        if (shape is not null)
        {
            tt.Shape = new TensorShapeProto();
            for (int k = 0; k < shape.Count; k++)
            {
                var d = new TensorShapeProto.Types.Dimension();
                if (shape[k] >= 0) d.DimValue = shape[k];
                else if (dimNames is not null && k < dimNames.Count && dimNames[k].Length > 0) d.DimParam = dimNames[k];
                tt.Shape.Dim.Add(d);
            }
        }
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = tt } };
    }
}
