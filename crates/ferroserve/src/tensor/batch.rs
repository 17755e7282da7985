//! Dynamic batching of tensors: several requests' inputs stacked along the first dimension into one run, and the run's outputs cut back into each request's rows. Requests are only stacked when their inputs agree in type and in every dimension after the first.

use super::{Datatype, Tensor, TensorData, map_data};

/// What requests must share to be stacked: each input's type and dimensions after the first.
/// `None` when the request cannot be stacked (an input without a first dimension, or
/// inputs that disagree on it).
pub(crate) fn signature(inputs: &[Tensor]) -> Option<Vec<(Datatype, &[i64])>> {
    let rows = rows(inputs)?;
    inputs
        .iter()
        .map(|t| match t.shape.split_first() {
            Some((first, rest)) if *first == rows => Some((t.datatype(), rest)),
            _ => None,
        })
        .collect()
}

/// The request's rows: its inputs' first dimension.
fn rows(inputs: &[Tensor]) -> Option<i64> {
    inputs.first()?.shape.first().copied()
}

/// Stacks the requests' inputs (each in the model's order, all of one [`signature`]) into
/// one set of inputs, copying them, so that the requests can still run one by one if the
/// batch fails; with the rows each request brought.
pub(crate) fn join(requests: &[Vec<Tensor>]) -> Result<(Vec<Tensor>, Vec<usize>), String> {
    let mut counts = Vec::with_capacity(requests.len());
    let Some((first, rest)) = requests.split_first() else {
        return Ok((Vec::new(), counts));
    };
    let mut joined = first.clone();
    counts.push(rows_of(first)?);
    for inputs in rest {
        let rows = rows_of(inputs)?;
        counts.push(rows);
        if joined.len() != inputs.len() {
            return Err("requests with different inputs in one batch".to_owned());
        }
        for (into, input) in joined.iter_mut().zip(inputs) {
            if into.name != input.name || into.shape.get(1..) != input.shape.get(1..) {
                return Err(format!(
                    "input `{}`: shapes differ in one batch",
                    input.name
                ));
            }
            append(&mut into.data, &input.data)?;
            if let Some(first) = into.shape.first_mut() {
                *first = i64::try_from(rows)
                    .ok()
                    .and_then(|rows| first.checked_add(rows))
                    .ok_or("a batch too large")?;
            }
        }
    }
    Ok((joined, counts))
}

/// A request's rows, as a count.
fn rows_of(inputs: &[Tensor]) -> Result<usize, String> {
    let rows = rows(inputs).ok_or("an input without a first dimension")?;
    usize::try_from(rows).map_err(|_| "a negative first dimension".to_owned())
}

/// Appends `more` to `data`, of the same element type.
fn append(data: &mut TensorData, more: &TensorData) -> Result<(), String> {
    macro_rules! same {
        ($($variant:ident),*) => {
            match (data, more) {
                $((TensorData::$variant(a), TensorData::$variant(b)) => a.extend_from_slice(b),)*
                (a, b) => {
                    return Err(format!(
                        "{} and {} in one batch",
                        a.datatype().name(),
                        b.datatype().name()
                    ))
                }
            }
        };
    }
    same!(
        Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
    );
    Ok(())
}

/// Cuts one run's `outputs` into each request's rows (`counts`, as [`join`] gave them);
/// each output's first dimension must be the batch's rows.
pub(crate) fn split(outputs: Vec<Tensor>, counts: &[usize]) -> Result<Vec<Vec<Tensor>>, String> {
    let total = counts
        .iter()
        .try_fold(0usize, |n, c| n.checked_add(*c))
        .ok_or("a batch too large")?;
    let mut answers: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::new()).collect();
    for mut output in outputs {
        let first = output.shape.first().copied().unwrap_or(-1);
        if usize::try_from(first).ok() != Some(total) {
            return Err(format!(
                "output `{}` has {first} rows for a batch of {total}: the model does not keep \
                 its first dimension as the batch",
                output.name
            ));
        }
        let per_row = output.data.len().checked_div(total).unwrap_or(0);
        // Cut from the back, so each cut moves only the rows it takes.
        for (answer, count) in answers.iter_mut().zip(counts).rev() {
            let keep = count
                .checked_mul(per_row)
                .and_then(|n| output.data.len().checked_sub(n))
                .ok_or_else(|| format!("output `{}` is short of rows", output.name))?;
            let data = map_data!(&mut output.data, v => v.split_off(keep));
            let mut shape = output.shape.clone();
            if let Some(first) = shape.first_mut() {
                *first = i64::try_from(*count).unwrap_or(i64::MAX);
            }
            answer.push(Tensor {
                name: output.name.clone(),
                shape,
                data,
            });
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(rows: i64, values: Vec<f32>) -> Vec<Tensor> {
        vec![Tensor::new("x", vec![rows, 2], TensorData::Fp32(values)).expect("fits")]
    }

    #[test]
    fn join_stacks_rows_and_split_gives_each_its_own() {
        let (joined, counts) =
            join(&[x(1, vec![1., 2.]), x(2, vec![3., 4., 5., 6.])]).expect("same shapes");
        assert_eq!(counts, [1, 2]);
        assert_eq!(joined[0].shape, [3, 2]);
        assert_eq!(
            joined[0].data,
            TensorData::Fp32(vec![1., 2., 3., 4., 5., 6.])
        );
        let answers = split(joined, &counts).expect("3 rows");
        assert_eq!(answers[0], x(1, vec![1., 2.]));
        assert_eq!(answers[1], x(2, vec![3., 4., 5., 6.]));
    }

    #[test]
    fn only_the_same_inner_shapes_share_a_signature() {
        let a = x(1, vec![1., 2.]);
        let b = x(3, vec![0.; 6]);
        let c = vec![Tensor::new("x", vec![1, 3], TensorData::Fp32(vec![0.; 3])).expect("fits")];
        assert_eq!(signature(&a), signature(&b));
        assert_ne!(signature(&a), signature(&c));
        let scalar = vec![Tensor::new("x", vec![], TensorData::Fp32(vec![0.])).expect("fits")];
        assert_eq!(signature(&scalar), None);
        assert!(join(&[a, c]).is_err());
    }

    #[test]
    fn an_output_that_lost_the_batch_dimension_is_an_error() {
        let pooled = vec![Tensor::new("y", vec![1], TensorData::Fp32(vec![0.])).expect("fits")];
        let error = split(pooled, &[1, 2]).expect_err("1 row for 3");
        assert!(
            error.contains("output `y` has 1 rows for a batch of 3"),
            "{error}"
        );
    }
}
