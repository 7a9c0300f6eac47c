package tickcast.spark;

import java.io.Serializable;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.streaming.StatefulProcessor;
import org.apache.spark.sql.streaming.TTLConfig;
import org.apache.spark.sql.streaming.TimeMode;
import org.apache.spark.sql.streaming.TimerValues;
import org.apache.spark.sql.streaming.ValueState;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;

import scala.jdk.javaapi.CollectionConverters;

/**
 * Which copy of a key is the first one the stream accepted, remembered between micro-batches in
 * the RocksDB state store.
 *
 * <p>The dedupe rule itself lives in tickcast.core.tickrules (DEDUPE) and is applied in Python; this
 * processor only answers what the rule asks of the past: is this row the first valid copy of its
 * key, counting earlier micro-batches and then Kafka position within the batch. What a batch
 * decides depends only on the rows of the batches up to it, so a replayed batch decides what its
 * first run decided. A key is remembered for {@code memorySeconds} of processing time (the batch
 * times, which a replay reads back from the offset log).
 */
public final class FirstCopy extends StatefulProcessor<String, Row, Row> {
    private static final long serialVersionUID = 1L;

    private final Columns columns;
    private final long memorySeconds;
    private transient ValueState<Boolean> seen;

    private FirstCopy(Columns columns, long memorySeconds) {
        this.columns = columns;
        this.memorySeconds = memorySeconds;
    }

    /** Where the processor finds what it reads in an input row. */
    private static final class Columns implements Serializable {
        private static final long serialVersionUID = 1L;
        final int reason, key, partition, offset;

        Columns(StructType schema, String reason, String key, String partition, String offset) {
            this.reason = schema.fieldIndex(reason);
            this.key = schema.fieldIndex(key);
            this.partition = schema.fieldIndex(partition);
            this.offset = schema.fieldIndex(offset);
        }
    }

    /**
     * {@code rows} with {@code firstCopyColumn} added: for a valid row (null {@code reason}),
     * whether it is the first copy of its {@code key}; null for an invalid row, which is neither
     * remembered nor compared.
     */
    public static Dataset<Row> mark(Dataset<Row> rows, long memorySeconds, String firstCopyColumn, String reason,
                                    String key, String partition, String offset) {
        StructType in = rows.schema();
        Columns columns = new Columns(in, reason, key, partition, offset);
        StructType out = in.add(firstCopyColumn, DataTypes.BooleanType, true);
        // Invalid rows share one group and never touch the state.
        MapFunction<Row, String> group = row -> row.isNullAt(columns.reason) && !row.isNullAt(columns.key)
                ? row.getString(columns.key) : "";
        return rows.groupByKey(group, Encoders.STRING())
                .transformWithState(new FirstCopy(columns, memorySeconds), TimeMode.ProcessingTime(),
                        OutputMode.Append(), Encoders.row(out));
    }

    @Override
    public void init(OutputMode outputMode, TimeMode timeMode) {
        seen = getHandle().getValueState("seen", Encoders.BOOLEAN(),
                new TTLConfig(Duration.ofSeconds(memorySeconds)));
    }

    @Override
    public scala.collection.Iterator<Row> handleInputRows(String key, scala.collection.Iterator<Row> rows,
                                                          TimerValues timerValues) {
        if (key.isEmpty()) {
            return rows.map(row -> extended(row, null));
        }
        Row only = rows.next();
        if (!rows.hasNext()) {
            boolean first = !seen.exists();
            if (first) {
                seen.update(true);
            }
            return CollectionConverters.asScala(List.of(extended(only, first)).iterator());
        }
        List<Row> copies = new ArrayList<>();
        copies.add(only);
        while (rows.hasNext()) {
            copies.add(rows.next());
        }
        // Within a micro-batch the first copy is the first by Kafka position, whatever order the
        // shuffle delivered the rows in.
        copies.sort(Comparator.<Row>comparingInt(r -> r.getInt(columns.partition))
                .thenComparingLong(r -> r.getLong(columns.offset)));
        boolean first = !seen.exists();
        if (first) {
            seen.update(true);
        }
        List<Row> out = new ArrayList<>(copies.size());
        for (Row row : copies) {
            out.add(extended(row, first));
            first = false;
        }
        return CollectionConverters.asScala(out.iterator());
    }

    private static Row extended(Row row, Boolean firstCopy) {
        Object[] values = new Object[row.length() + 1];
        for (int i = 0; i < row.length(); i++) {
            values[i] = row.get(i);
        }
        values[row.length()] = firstCopy;
        return RowFactory.create(values);
    }
}
