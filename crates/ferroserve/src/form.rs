//! Form bodies — URL-encoded and multipart — as `Request::form` reads them.

use bytes::Bytes;
use serde_json::Value;

use crate::error::BodyError;

/// One uploaded file of a multipart form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormFile {
    /// The form field's name.
    pub name: String,
    /// The file name the client gave, if any.
    pub file_name: Option<String>,
    /// The part's content type, if given.
    pub content_type: Option<String>,
    /// The file's bytes.
    pub data: Bytes,
}

/// A parsed form: text fields in order (a name may repeat) and uploaded files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
    files: Vec<FormFile>,
}

impl Form {
    /// The last value of text field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every text field, in order.
    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    /// The uploaded file of field `name`.
    pub fn file(&self, name: &str) -> Option<&FormFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Every uploaded file, in order.
    pub fn files(&self) -> &[FormFile] {
        &self.files
    }

    /// A URL-encoded body.
    pub(crate) fn from_urlencoded(body: &[u8]) -> Self {
        Self {
            fields: form_urlencoded::parse(body).into_owned().collect(),
            files: Vec::new(),
        }
    }

    /// A JSON object given to a handle: its values become text fields.
    pub(crate) fn from_json(value: &Value) -> Result<Self, BodyError> {
        let object = value
            .as_object()
            .ok_or_else(|| BodyError::bad_request("a form needs a JSON object, not this value"))?;
        let fields = object
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        Ok(Self {
            fields,
            files: Vec::new(),
        })
    }

    /// A `multipart/form-data` body with this `content-type`.
    pub(crate) async fn from_multipart(content_type: &str, body: Bytes) -> Result<Self, BodyError> {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| BodyError::bad_request(format!("bad multipart content-type: {e}")))?;
        let stream =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut form = Self::default();
        let bad =
            |e: multer::Error| BodyError::bad_request(format!("malformed multipart body: {e}"));
        while let Some(field) = multipart.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            let data = field.bytes().await.map_err(bad)?;
            if file_name.is_some() {
                form.files.push(FormFile {
                    name,
                    file_name,
                    content_type,
                    data,
                });
            } else {
                let text = String::from_utf8(data.to_vec()).map_err(|_| {
                    BodyError::bad_request(format!("form field `{name}` is not valid UTF-8"))
                })?;
                form.fields.push((name, text));
            }
        }
        Ok(form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_fields_keep_their_order() {
        let form = Form::from_urlencoded(b"a=1&b=two+words&a=3");
        assert_eq!(form.get("a"), Some("3"));
        assert_eq!(form.get("b"), Some("two words"));
        assert_eq!(form.fields().len(), 3);
    }

    #[tokio::test]
    async fn multipart_has_fields_and_files() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nada\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\n\
                    Content-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n";
        let form = Form::from_multipart("multipart/form-data; boundary=XyZ", Bytes::from(body))
            .await
            .expect("valid multipart");
        assert_eq!(form.get("user"), Some("ada"));
        let file = form.file("upload").expect("a file");
        assert_eq!(file.file_name.as_deref(), Some("a.txt"));
        assert_eq!(file.content_type.as_deref(), Some("text/plain"));
        assert_eq!(file.data, "hello");
    }

    #[tokio::test]
    async fn malformed_multipart_is_a_clear_error() {
        let err = Form::from_multipart("multipart/form-data; boundary=XyZ", Bytes::from("garbage"))
            .await
            .expect_err("malformed");
        assert!(err.to_string().contains("multipart"), "{err}");
    }
}
