using OnnxKfac.Toolkit.Data;

namespace OnnxKfac.Toolkit.Tests.Data;

public sealed class CsvTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static float[] Features(Dataset ds, int i)
    {
        var f = new float[ds.FeatureLength];
        ds.CopyExample(i, f, new float[ds.LabelLength]);
        return f;
    }

    private static long Class(Dataset ds, int i)
    {
        var l = new long[1];
        ds.CopyExample(i, new float[ds.FeatureLength], l);
        return l[0];
    }

    [Theory]
    [InlineData(StreamingMode.InMemory, "nan", "'nan'")]
    [InlineData(StreamingMode.Streamed, "nan", "'nan'")]
    [InlineData(StreamingMode.InMemory, "inf", "'inf'")]
    [InlineData(StreamingMode.Streamed, "Infinity", "'Infinity'")]
    [InlineData(StreamingMode.InMemory, "-Infinity", "'-Infinity'")]
    public void NonFiniteValuesAreRefusedAlikeNamingTheCell(StreamingMode mode, string value, string shown)
    {
        string path = DataFiles.WriteText(_dir, $"nf-{mode}-{value}.csv", $"x1,x2,label\n1,2,0\n3,{value},1\n");
        var e = Assert.Throws<DataException>(() =>
        {
            using var ds = Csv.OpenDataset(path, options: new DataOptions { Streaming = mode });
        });
        Assert.Contains($"{path}:3:3", e.Message);
        Assert.Contains(shown, e.Message);
    }

    [Theory]
    [InlineData(StreamingMode.InMemory)]
    [InlineData(StreamingMode.Streamed)]
    public void DetectsHeaderAndUsesLastColumnAsLabel(StreamingMode mode)
    {
        string path = DataFiles.WriteText(_dir, "a.csv", "x1,x2,x3,label\n1,2,3,0\n-4.5,5e-1,6,2\n7,8,9,1\n");

        using var ds = Csv.OpenDataset(path, options: new DataOptions { Streaming = mode });

        Assert.Equal(3, ds.Count);
        Assert.Equal([3L], ds.FeatureShape);
        Assert.Equal(LabelKind.ClassIndex, ds.LabelKind);
        Assert.Equal([1f, 2, 3], Features(ds, 0));
        Assert.Equal([-4.5f, 0.5f, 6], Features(ds, 1));
        Assert.Equal([7f, 8, 9], Features(ds, 2));
        Assert.Equal([0L, 2, 1], Enumerable.Range(0, 3).Select(i => Class(ds, i)));
    }

    [Theory]
    [InlineData(StreamingMode.InMemory)]
    [InlineData(StreamingMode.Streamed)]
    public void NoHeaderWhenFirstRowIsNumeric(StreamingMode mode)
    {
        string path = DataFiles.WriteText(_dir, "b.csv", "1,2,0\r\n3,4,1\r\n");

        using var ds = Csv.OpenDataset(path, options: new DataOptions { Streaming = mode });

        Assert.Equal(2, ds.Count);
        Assert.Equal([1f, 2], Features(ds, 0));
        Assert.Equal([3f, 4], Features(ds, 1));
        Assert.Equal(1, Class(ds, 1));
    }

    [Theory]
    [InlineData(StreamingMode.InMemory)]
    [InlineData(StreamingMode.Streamed)]
    public void LabelColumnByNameWithDelimiterQuotesAndRegression(StreamingMode mode)
    {
        string text =
            "\"price\";\"size; m2\";\"rooms\"\n" +
            "\"250000.5\";80;3\n" +
            "\n" +
            "199999;\"65.25\";\"2\"\n";
        string path = DataFiles.WriteText(_dir, "c.csv", text);

        using var ds = Csv.OpenDataset(path,
            new CsvOptions { Delimiter = ';', LabelColumn = "price" },
            new DataOptions { LabelKind = LabelKind.Regression, Streaming = mode });

        Assert.Equal(2, ds.Count);
        Assert.Equal(LabelKind.Regression, ds.LabelKind);
        var f = new float[2];
        var y = new float[1];
        ds.CopyExample(0, f, y);
        Assert.Equal([80f, 3], f);
        Assert.Equal(250000.5f, y[0]);
        ds.CopyExample(1, f, y);
        Assert.Equal([65.25f, 2], f);
        Assert.Equal(199999f, y[0]);
    }

    [Fact]
    public void LabelColumnByIndexAndForcedHeader()
    {
        // The header row is numeric-looking, so detection would take it as data; HasHeader forces it.
        string path = DataFiles.WriteText(_dir, "d.csv", "0,1,2\n4,10,20\n1,30,40\n");

        using var ds = Csv.OpenDataset(path, new CsvOptions { HasHeader = true, LabelColumnIndex = 0 });

        Assert.Equal(2, ds.Count);
        Assert.Equal([10f, 20], Features(ds, 0));
        Assert.Equal(4, Class(ds, 0));
        Assert.Equal([30f, 40], Features(ds, 1));
        Assert.Equal(1, Class(ds, 1));
    }

    [Fact]
    public void QuotedFieldsMayHoldDelimitersQuotesAndLineBreaks()
    {
        string text = "\"a, \"\"first\"\"\",\"multi\nline\",y\n1,2,0\n";
        string path = DataFiles.WriteText(_dir, "e.csv", text);

        using var ds = Csv.OpenDataset(path, options: new DataOptions { Streaming = StreamingMode.Streamed });

        Assert.Equal(1, ds.Count);
        Assert.Equal([1f, 2], Features(ds, 0));
    }

    [Fact]
    public void StreamedAndInMemoryGiveTheSameExamples()
    {
        var sb = new System.Text.StringBuilder("f0,f1,f2,f3,y\n");
        for (int i = 0; i < 500; i++)
            sb.Append($"{i * 0.5},{-i},\"{i % 13}\",{i * i},{i % 7}\n");
        string path = DataFiles.WriteText(_dir, "big.csv", sb.ToString());

        using var mem = Csv.OpenDataset(path, options: new DataOptions { Streaming = StreamingMode.InMemory });
        using var str = Csv.OpenDataset(path, options: new DataOptions { Streaming = StreamingMode.Streamed });
        Assert.False(mem.IsStreamed);
        Assert.True(str.IsStreamed);

        Assert.Equal(500, str.Count);
        for (int i = 0; i < 500; i++)
        {
            Assert.Equal(Features(mem, i), Features(str, i));
            Assert.Equal(Class(mem, i), Class(str, i));
            Assert.Equal([i * 0.5f, -i, i % 13, i * i], Features(str, i));
            Assert.Equal(i % 7, Class(str, i));
        }
    }

    [Fact]
    public void ThresholdChoosesStreaming()
    {
        string path = DataFiles.WriteText(_dir, "t.csv", "1,2,0\n3,4,1\n");

        using var ds = Csv.OpenDataset(path, options: new DataOptions { StreamingThresholdBytes = 4 });

        Assert.True(ds.IsStreamed);
        Assert.Equal([3f, 4], Features(ds, 1));
        Assert.Equal(1, Class(ds, 1));
    }

    // ---- bad input ----

    [Fact]
    public void NonNumericCellNamesFileLineAndColumn()
    {
        string path = DataFiles.WriteText(_dir, "bad.csv", "x,y,label\n1,2,0\n3,abc,1\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path));

        Assert.Equal($"{path}:3:3: field 2 ('y') is not a number: 'abc'.", e.Message);
    }

    [Fact]
    public void EmptyCellIsReported()
    {
        string path = DataFiles.WriteText(_dir, "empty-cell.csv", "1,2,0\n3,,1\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path));

        Assert.Equal($"{path}:2:3: field 2 is not a number: the cell is empty.", e.Message);
    }

    [Fact]
    public void WrongFieldCountNamesFileLineAndColumn()
    {
        string path = DataFiles.WriteText(_dir, "count.csv", "a,b,label\n1,2,0\n1,2,3,4\n5,6\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path));
        Assert.Equal($"{path}:3:7: expected 3 fields, found 4.", e.Message);

        string path2 = DataFiles.WriteText(_dir, "count2.csv", "a,b,label\n5,6\n");
        var e2 = Assert.Throws<DataException>(() => Csv.OpenDataset(path2));
        Assert.Equal($"{path2}:2:4: expected 3 fields, found 2.", e2.Message);
    }

    [Fact]
    public void LineNumbersCountLineBreaksInsideQuotes()
    {
        string path = DataFiles.WriteText(_dir, "lines.csv", "\"a\nb\",label\n1,0\nx,1\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path));

        Assert.StartsWith($"{path}:4:1: field 1 ('a\nb')", e.Message);
    }

    [Fact]
    public void LabelOutOfRangeOrNotIntegerIsReported()
    {
        string path = DataFiles.WriteText(_dir, "labels.csv", "1,2,0\n3,4,5\n");
        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path, options: new DataOptions { ClassCount = 5 }));
        Assert.Equal($"{path}:2:5: label 5 in field 3 is out of range [0, 5).", e.Message);

        string path2 = DataFiles.WriteText(_dir, "frac.csv", "1,2,0.5\n");
        var e2 = Assert.Throws<DataException>(() => Csv.OpenDataset(path2));
        Assert.Contains($"{path2}:1:5: label 0.5 in field 3 is not an integer class index", e2.Message);

        string path3 = DataFiles.WriteText(_dir, "neg.csv", "1,2,-1\n");
        var e3 = Assert.Throws<DataException>(() => Csv.OpenDataset(path3));
        Assert.Contains("label -1 in field 3 is out of range", e3.Message);
    }

    [Fact]
    public void EmptyFilesAreRefused()
    {
        string empty = DataFiles.WriteText(_dir, "empty.csv", "");
        Assert.Contains($"{empty}: the data set is empty", Assert.Throws<DataException>(() => Csv.OpenDataset(empty)).Message);

        string headerOnly = DataFiles.WriteText(_dir, "header.csv", "a,b,label\n");
        Assert.Contains($"{headerOnly}: the data set is empty (a header row and no data rows)", Assert.Throws<DataException>(() => Csv.OpenDataset(headerOnly)).Message);
    }

    [Fact]
    public void UnknownLabelColumnNameIsReported()
    {
        string path = DataFiles.WriteText(_dir, "names.csv", "a,b,c\n1,2,3\n");
        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path, new CsvOptions { LabelColumn = "target" }));
        Assert.Equal($"{path}:1: no column named 'target'; the header has 'a', 'b', 'c'.", e.Message);

        string noHeader = DataFiles.WriteText(_dir, "nohdr.csv", "1,2,3\n");
        var e2 = Assert.Throws<DataException>(() => Csv.OpenDataset(noHeader, new CsvOptions { LabelColumn = "c" }));
        Assert.Contains("the file has no header row", e2.Message);
    }

    [Fact]
    public void UnclosedQuoteIsReported()
    {
        string path = DataFiles.WriteText(_dir, "quote.csv", "1,2,0\n3,\"4,1\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path));

        Assert.Equal($"{path}:2:3: a quoted field is never closed.", e.Message);
    }

    [Fact]
    public void FeatureCountMismatchAgainstExpectedShape()
    {
        string path = DataFiles.WriteText(_dir, "shape.csv", "1,2,3,0\n");

        var e = Assert.Throws<DataException>(() => Csv.OpenDataset(path, options: new DataOptions { ExpectedFeatureShape = [4] }));

        Assert.Contains($"{path}: examples have shape [3] (3 values) but the expected feature shape is [4]", e.Message);
    }
}
