-- -*- mode: sql; sql-product: postgres; -*-
-- Copyright ⓒ 2024-2025 Peter Morgan <peter.james.morgan@gmail.com>
--
-- Licensed under the Apache License, Version 2.0 (the "License");
-- you may not use this file except in compliance with the License.
-- You may obtain a copy of the License at
--
-- http://www.apache.org/licenses/LICENSE-2.0
--
-- Unless required by applicable law or agreed to in writing, software
-- distributed under the License is distributed on an "AS IS" BASIS,
-- WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
-- See the License for the specific language governing permissions and
-- limitations under the License.

-- Tollgate patch: the bytes each topition of the cluster holds now (DescribeLogDirs): the keys
-- and values of its records plus the keys and values of their headers. Each table is summed
-- once per topition and joined, rather than a subquery per record; a topition without
-- records holds 0.

-- prepare topition_size_by_cluster (text) as

select t.name, tp.partition, coalesce(r.bytes, 0) + coalesce(h.bytes, 0)

from

cluster c
join topic t on t.cluster = c.id
join topition tp on tp.topic = t.id

left join (
    select topition, sum(coalesce(length(k), 0) + coalesce(length(v), 0)) as bytes
    from record
    group by topition
) r on r.topition = tp.id

left join (
    select topition, sum(coalesce(length(k), 0) + coalesce(length(v), 0)) as bytes
    from header
    group by topition
) h on h.topition = tp.id

where c.name = $1

order by t.name, tp.partition;
